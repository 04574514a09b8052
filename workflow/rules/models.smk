# Stage 1b (pretrained studies with a `mini_pair` block): a small hub-format Qwen3 teacher / student
# pair with a BPE tokenizer trained on the tasks' training text, saved like hub snapshots.
# Everything downstream reads them as pretrained checkpoints from teacher.path / student.path.


rule mini_pair:
    input:
        train=expand(rules.prepare_data.output.train, task=TASKS),
    output:
        teacher=directory(f"{RESULTS}/hub/teacher"),
        student=directory(f"{RESULTS}/hub/student"),
        manifest=f"{RESULTS}/hub/manifest.json",
    params:
        spec=config.get("mini_pair", {}),
        seed=config["seed"],
    threads: config["threads"]
    priority: 4
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/mini_pair.log",
    benchmark:
        f"{RESULTS}/benchmarks/mini_pair.tsv"
    script:
        "../scripts/mini_pair.py"
