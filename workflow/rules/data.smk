# Stage 1: data preparation and the shared tokenizer.


rule prepare_data:
    output:
        train=L.data_file("{task}", "train"),
        validation=L.data_file("{task}", "validation"),
        test=L.data_file("{task}", "test"),
        manifest=L.path("data", "{task}", "manifest.json"),
    params:
        spec=task_spec,
        seed=config["seed"],
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("prepare_data", "{task}"),
    script:
        "../scripts/prepare_data.py"


rule tokenizer:
    input:
        mini_pair_outputs,
    output:
        L.tokenizer_file(),
    params:
        source=tokenizer_params,
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("tokenizer"),
    script:
        "../scripts/tokenizer.py"
