# Stage 1: data preparation (training data and the math benchmarks) and the shared tokenizer.


rule prepare_data:
    output:
        train=f"{RESULTS}/data/{{task}}/train.jsonl",
        validation=f"{RESULTS}/data/{{task}}/validation.jsonl",
        test=f"{RESULTS}/data/{{task}}/test.jsonl",
        manifest=f"{RESULTS}/data/{{task}}/manifest.json",
    params:
        spec=data_spec,
        seed=config["seed"],
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/prepare_data/{{task}}.log",
    script:
        "../scripts/prepare_data.py"


rule prepare_benchmark:
    output:
        test=f"{RESULTS}/data/{{task}}/bench/{{bench}}/test.jsonl",
        manifest=f"{RESULTS}/data/{{task}}/bench/{{bench}}/manifest.json",
    params:
        source=benchmark_source,
        grader=BENCHMARK_GRADER,
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/prepare_benchmark/{{task}}/{{bench}}.log",
    script:
        "../scripts/prepare_benchmark.py"


rule tokenizer:
    output:
        f"{RESULTS}/tokenizer/tokenizer.json",
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/tokenizer.log",
    script:
        "../scripts/tokenizer.py"
