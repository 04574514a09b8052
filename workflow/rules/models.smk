# Stage 1b (pretrained studies with a `mini_pair` block): a small hub-format Qwen3 teacher / student
# pair with a BPE tokenizer trained on the tasks' training text, saved like hub snapshots.
# Everything downstream reads them as pretrained checkpoints from teacher.path / student.path.


rule mini_pair:
    input:
        train=expand(rules.prepare_data.output.train, task=TASKS),
    output:
        teacher=directory(L.hub_dir("teacher")),
        student=directory(L.hub_dir("student")),
        manifest=L.path("hub", "manifest.json"),
    params:
        spec=mini_pair_spec,
        seed=config["seed"],
    threads: config["threads"]
    priority: 4
    resources:
        **stage_resources("teacher"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("mini_pair"),
    benchmark:
        L.benchmark("mini_pair")
    script:
        "../scripts/mini_pair.py"
