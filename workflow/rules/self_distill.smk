# Stage 2b: the self-distillation group (OPSD; opdpipe.self_distill), included when the config has a
# `self_distillation` block. No teacher stage: the group's teacher is its own SFT-init checkpoint
# (rule sft_init, on the examples below), frozen, scoring with the privileged prompt that holds the
# reference solution. Its runs, evaluations, tracking and report go through the same rules as a task's.


rule self_distill_data:
    input:
        source=L.path("data", config["self_distillation"]["source"], "manifest.json"),
    output:
        train=L.data_file(self_distill.GROUP, "train"),
        validation=L.data_file(self_distill.GROUP, "validation"),
        test=L.data_file(self_distill.GROUP, "test"),
        hint_test=L.hint_test_file(self_distill.GROUP),
        manifest=L.path("data", self_distill.GROUP, "manifest.json"),
    params:
        spec={"source": config["self_distillation"]["source"]},
        seed=config["seed"],
    resources:
        **stage_resources("data"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("self_distill_data"),
    script:
        "../scripts/self_distill_data.py"


rule self_distill_sft_examples:
    input:
        completions=L.path(config["self_distillation"]["source"], "teacher", "completions.jsonl"),
        source=L.path("data", config["self_distillation"]["source"], "manifest.json"),
    output:
        L.sft_examples_file(self_distill.GROUP),
    params:
        spec=group_spec(),
        seed=config["seed"],
    resources:
        **stage_resources("data"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("self_distill_sft_examples"),
    script:
        "../scripts/self_distill_sft.py"
