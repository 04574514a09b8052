# Stage 5: MLflow. The store and experiment are created once, upstream of the parallel jobs;
# training jobs log their curves live; `track` mirrors every finished output and reads it back.

TRACKING_URI = config["tracking"]["uri"] or f"sqlite:///{os.path.abspath(RESULTS)}/mlflow.db"


rule tracking_store:
    output:
        f"{RESULTS}/tracking/store.json",
    params:
        uri=TRACKING_URI,
        study=STUDY,
        artifacts=f"{RESULTS}/mlartifacts",
    resources:
        **stage_resources("track"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/tracking_store.log",
    script:
        "../scripts/tracking_store.py"


rule track:
    input:
        store=rules.tracking_store.output,
        evals=all_evals(),
    output:
        f"{RESULTS}/tracking/runs.json",
    params:
        uri=TRACKING_URI,
        variants=VARIANT_TABLE,
        hparams={f"{t}/{v}": opd_hparams(config, t, v) for t in TASKS for v in VARIANTS},
    resources:
        **stage_resources("track"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        f"{RESULTS}/logs/track.log",
    script:
        "../scripts/track.py"
