# Stage 4: lm-eval benchmarks of every trained student and of the teacher / SFT-init rows.
# One job per (task, variant) evaluates all of its seeds in one process: lm-eval, torch and
# transformers are imported once, not once per seed. Each seed keeps its own eval.json.


rule evaluate_variant:
    input:
        checkpoints=variant_checkpoints,
        test=rules.prepare_data.output.test,
    output:
        [L.eval_file("{task}", "{variant}", s) for s in SEEDS],
    params:
        eval=eval_params,
        max_gen_toks=max_new_tokens,
        seeds=SEEDS,
        labels=variant_labels,
    threads: config["threads"]
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("evaluate", "{task}", "{variant}"),
    benchmark:
        L.benchmark("evaluate", "{task}", "{variant}")
    script:
        "../scripts/evaluate.py"


rule evaluate_reference:
    input:
        checkpoints=reference_checkpoint,
        test=rules.prepare_data.output.test,
    output:
        L.eval_file("{task}", "{ref}"),
    params:
        eval=eval_params,
        max_gen_toks=max_new_tokens,
        seeds=[config["seed"]],
        labels=reference_label,
    threads: config["threads"]
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("evaluate", "{task}", "{ref}"),
    benchmark:
        L.benchmark("evaluate", "{task}", "{ref}")
    script:
        "../scripts/evaluate.py"
