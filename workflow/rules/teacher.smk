# Stage 2: teacher caching (once per task) and the SFT-init student.
# Priorities: the long chain (teacher -> SFT-init -> train) first; the short evaluations fill the end.


rule teacher:
    input:
        data=rules.prepare_data.output.manifest,
        tokenizer=rules.tokenizer.output,
    output:
        checkpoint=directory(f"{RESULTS}/{{task}}/teacher/checkpoint"),
        completions=f"{RESULTS}/{{task}}/teacher/completions.jsonl",
        manifest=f"{RESULTS}/{{task}}/teacher/manifest.json",
    params:
        cfg=world_params,
        seed=config["seed"],
    threads: config["threads"]
    priority: 3
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/teacher/{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/teacher/{{task}}.tsv"
    script:
        "../scripts/teacher.py"


rule sft_init:
    input:
        completions=rules.teacher.output.completions,
        tokenizer=rules.tokenizer.output,
    output:
        checkpoint=directory(f"{RESULTS}/{{task}}/sft_init/checkpoint"),
        manifest=f"{RESULTS}/{{task}}/sft_init/manifest.json",
    params:
        student=student_params,
        seed=config["seed"],
    threads: config["threads"]
    priority: 2
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/sft_init/{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sft_init/{{task}}.tsv"
    script:
        "../scripts/sft_init.py"
