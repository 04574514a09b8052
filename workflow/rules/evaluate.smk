# Stage 4: lm-eval benchmarks of every trained student and of the teacher / SFT-init rows.
# One job per (task, variant) evaluates all of its seeds in one process: lm-eval, torch and
# transformers are imported once, not once per seed. Each seed keeps its own eval.json (final/) and
# eval_best.json (best/, chosen by validation avg@k in training; final's evaluation, reused, when
# the best step is the last one).


rule evaluate_variant:
    input:
        checkpoints=variant_checkpoints,
        best=variant_bests,
        summaries=variant_summaries,
        test=rules.prepare_data.output.test,
    output:
        final=[L.eval_file("{task}", "{variant}", s) for s in SEEDS],
        best=[L.eval_best_file("{task}", "{variant}", s) for s in SEEDS],
    params:
        eval=eval_params,
        max_gen_toks=max_new_tokens,
        seeds=SEEDS,
        labels=variant_labels,
    threads: config["threads"]
    resources:
        **stage_resources("evaluate"),
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
        test=reference_test,  # a self-teacher reads the test split with the privileged prompt
    output:
        L.eval_file("{task}", "{ref}"),
    params:
        eval=eval_params,
        max_gen_toks=max_new_tokens,
        seeds=[config["seed"]],
        labels=reference_label,
    threads: config["threads"]
    resources:
        **stage_resources("evaluate"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("evaluate", "{task}", "{ref}"),
    benchmark:
        L.benchmark("evaluate", "{task}", "{ref}")
    script:
        "../scripts/evaluate.py"


# The math benchmarks (AIME24, AIME25, HMMT25) of tasks that name them: the same lm-eval templates,
# no newline stop, graded by math-verify. One file per checkpoint and benchmark.
rule evaluate_benchmark_variant:
    input:
        checkpoints=variant_checkpoints,
        test=rules.prepare_benchmark.output.test,
    output:
        [L.bench_eval_file("{task}", "{variant}", "{bench}", s) for s in SEEDS],
    params:
        eval=config["eval"],
        max_gen_toks=max_new_tokens,
        seeds=SEEDS,
        labels=variant_labels,
    threads: config["threads"]
    resources:
        **stage_resources("evaluate"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("evaluate_benchmark", "{task}", "{variant}", "{bench}"),
    benchmark:
        L.benchmark("evaluate_benchmark", "{task}", "{variant}", "{bench}")
    script:
        "../scripts/evaluate_benchmark.py"


rule evaluate_benchmark_reference:
    input:
        checkpoints=reference_checkpoint,
        test=rules.prepare_benchmark.output.test,
    output:
        L.bench_eval_file("{task}", "{ref}", "{bench}"),
    params:
        eval=config["eval"],
        max_gen_toks=max_new_tokens,
        seeds=[config["seed"]],
        labels=reference_label,
    threads: config["threads"]
    resources:
        **stage_resources("evaluate"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("evaluate_benchmark", "{task}", "{ref}", "{bench}"),
    benchmark:
        L.benchmark("evaluate_benchmark", "{task}", "{ref}", "{bench}")
    script:
        "../scripts/evaluate_benchmark.py"
