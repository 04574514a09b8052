# Stage 1: data preparation (training data and the math benchmarks) and the shared tokenizer.


rule prepare_data:
    wildcard_constraints:
        task="|".join(SOURCE_TASKS),  # a self-distillation group's data comes from its source task
    output:
        train=L.data_file("{task}", "train"),
        validation=L.data_file("{task}", "validation"),
        test=L.data_file("{task}", "test"),
        manifest=L.path("data", "{task}", "manifest.json"),
    params:
        spec=task_spec,
        seed=config["seed"],
    resources:
        **stage_resources("data"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("prepare_data", "{task}"),
    script:
        "../scripts/prepare_data.py"


rule prepare_benchmark:
    output:
        test=L.bench_data_file("{task}", "{bench}"),
        manifest=L.bench_data_file("{task}", "{bench}", "manifest.json"),
    params:
        source=benchmark_source,
        grader=BENCHMARK_GRADER,
    resources:
        **stage_resources("data"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("prepare_benchmark", "{task}", "{bench}"),
    script:
        "../scripts/prepare_benchmark.py"


rule tokenizer:
    input:
        mini_pair_outputs,
    output:
        L.tokenizer_file(),
    params:
        source=tokenizer_params,
    resources:
        **stage_resources("data"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("tokenizer"),
    script:
        "../scripts/tokenizer.py"
