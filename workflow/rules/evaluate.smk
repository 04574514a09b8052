# Stage 4: lm-eval benchmarks of every trained student and of the teacher / SFT-init rows.
# One job per (task, variant) evaluates all of its seeds in one process: lm-eval, torch and
# transformers are imported once, not once per seed. Each seed keeps its own eval.json.


rule evaluate_variant:
    input:
        checkpoints=lambda w: expand(rules.train.output.final, task=w.task, variant=w.variant, seed=SEEDS),
        test=rules.prepare_data.output.test,
    output:
        [f"{RESULTS}/{{task}}/{{variant}}/seed{s}/eval.json" for s in SEEDS],
    params:
        eval=eval_params,
        max_gen_toks=lambda w: config["tasks"][w.task]["max_new_tokens"],
        seeds=SEEDS,
        labels=lambda w: [f"{w.variant}/seed{s}" for s in SEEDS],
    threads: config["threads"]
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/evaluate/{{task}}/{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{task}}/{{variant}}.tsv"
    script:
        "../scripts/evaluate.py"


rule evaluate_reference:
    input:
        checkpoints=lambda w: [reference_checkpoint(w)],
        test=rules.prepare_data.output.test,
    output:
        f"{RESULTS}/{{task}}/{{ref}}/eval.json",
    params:
        eval=eval_params,
        max_gen_toks=lambda w: config["tasks"][w.task]["max_new_tokens"],
        seeds=[config["seed"]],
        labels=lambda w: [w.ref],
    threads: config["threads"]
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/evaluate/{{task}}/{{ref}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{task}}/{{ref}}.tsv"
    script:
        "../scripts/evaluate.py"
