# Stage 3: one OPD / OPD+ training run per task x variant x seed.


rule train:
    input:
        student=rules.sft_init.output.checkpoint,
        teacher=rules.teacher.output.checkpoint,
        data=rules.prepare_data.output.manifest,
        tracking=rules.tracking_store.output,
    output:
        final=directory(f"{RESULTS}/{{task}}/{{variant}}/seed{{seed}}/final"),
        summary=f"{RESULTS}/{{task}}/{{variant}}/seed{{seed}}/summary.json",
        metrics=f"{RESULTS}/{{task}}/{{variant}}/seed{{seed}}/metrics.jsonl",
    params:
        variant=variant_of,
        hparams=hparams,
        run_dir=run_dir,
        tracking_uri=TRACKING_URI,
        backend=BACKEND,
    threads: config["threads"]
    priority: 1
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/train/{{task}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{task}}/{{variant}}/seed{{seed}}.tsv"
    script:
        "../scripts/train.py"
