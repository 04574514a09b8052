# Stage 1: data preparation and the shared tokenizer.


rule prepare_data:
    output:
        train=f"{RESULTS}/data/{{task}}/train.jsonl",
        validation=f"{RESULTS}/data/{{task}}/validation.jsonl",
        test=f"{RESULTS}/data/{{task}}/test.jsonl",
        manifest=f"{RESULTS}/data/{{task}}/manifest.json",
    params:
        spec=lambda w: config["tasks"][w.task],
        seed=config["seed"],
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/prepare_data/{{task}}.log",
    script:
        "../scripts/prepare_data.py"


rule tokenizer:
    input:
        mini_pair_outputs,
    output:
        f"{RESULTS}/tokenizer/tokenizer.json",
    params:
        source=tokenizer_params,
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/tokenizer.log",
    script:
        "../scripts/tokenizer.py"
