# Stage 2: teacher caching (once per task) and the SFT-init student.
# Priorities: the long chain (teacher -> SFT-init -> train) first; the short evaluations fill the end.


rule teacher:
    wildcard_constraints:
        task="|".join(SOURCE_TASKS),  # a self-distillation group has no teacher stage
    input:
        data=rules.prepare_data.output.manifest,
        tokenizer=rules.tokenizer.output,
    output:
        checkpoint=directory(L.checkpoint("{task}", "teacher")),
        completions=L.path("{task}", "teacher", "completions.jsonl"),
        manifest=L.path("{task}", "teacher", "manifest.json"),
    params:
        cfg=teacher_params,
        seed=config["seed"],
    threads: config["threads"]
    priority: 3
    resources:
        **stage_resources("teacher"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("teacher", "{task}"),
    benchmark:
        L.benchmark("teacher", "{task}")
    script:
        "../scripts/teacher.py"


rule sft_init:
    input:
        completions=sft_examples,
        tokenizer=rules.tokenizer.output,
    output:
        checkpoint=directory(L.checkpoint("{task}", "sft_init")),
        manifest=L.path("{task}", "sft_init", "manifest.json"),
    params:
        student=student_params,
        seed=config["seed"],
    threads: config["threads"]
    priority: 2
    resources:
        **stage_resources("sft_init"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("sft_init", "{task}"),
    benchmark:
        L.benchmark("sft_init", "{task}")
    script:
        "../scripts/sft_init.py"
