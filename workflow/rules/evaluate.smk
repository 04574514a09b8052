# Stage 4: lm-eval benchmarks of every trained student and of the teacher / SFT-init rows.


rule evaluate_run:
    input:
        checkpoint=rules.train.output.final,
        test=rules.prepare_data.output.test,
    output:
        f"{RESULTS}/{{task}}/{{variant}}/seed{{seed}}/eval.json",
    params:
        eval=config["eval"],
        max_gen_toks=lambda w: config["tasks"][w.task]["max_new_tokens"],
        seed=lambda w: int(w.seed),
        label=lambda w: f"{w.variant}/seed{w.seed}",
    threads: config["threads"]
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/evaluate/{{task}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{task}}/{{variant}}/seed{{seed}}.tsv"
    script:
        "../scripts/evaluate.py"


rule evaluate_reference:
    input:
        checkpoint=reference_checkpoint,
        test=rules.prepare_data.output.test,
    output:
        f"{RESULTS}/{{task}}/{{ref}}/eval.json",
    params:
        eval=config["eval"],
        max_gen_toks=lambda w: config["tasks"][w.task]["max_new_tokens"],
        seed=config["seed"],
        label=lambda w: w.ref,
    threads: config["threads"]
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/evaluate/{{task}}/{{ref}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{task}}/{{ref}}.tsv"
    script:
        "../scripts/evaluate.py"
