# Stage 5: MLflow. The store and experiment are created once, upstream of the parallel jobs;
# training jobs log their curves live; `track` mirrors every finished output and reads it back.


# The sqlite store is an output too (when the config names no other tracking URI): a deleted store is
# made again and `track` rebuilds every run from the study's files. Training jobs read the marker as
# ancient(), so a new store never re-runs them.
rule tracking_store:
    output:
        tracking_store_outputs(),
    params:
        uri=TRACKING_URI,
        study=STUDY,
        results=study_root_of_output,
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("tracking_store"),
    script:
        "../scripts/tracking_store.py"


rule track:
    input:
        store=rules.tracking_store.output[0],
        evals=all_evals(),
        summaries=all_summaries(),
        metrics=all_metrics(),
    output:
        L.tracking_file("runs.json"),
    params:
        uri=TRACKING_URI,
        study=STUDY,
        results=study_root_of_store,
        rows=study_rows(),
        world=world_block(),
        variants=VARIANT_TABLE,
        hparams=all_hparams(),
        config_hash=config_hash(config),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("track"),
    script:
        "../scripts/track.py"
