# Stage 3: one OPD / OPD+ training run per task x variant x seed. With more than one rank
# (opd.world_size, or resources.train.gpus > 1) the job launches torchrun: data-parallel training.


rule train:
    input:
        student=rules.sft_init.output.checkpoint,
        teacher=teacher_checkpoint,  # a self-distillation group's teacher is its own SFT-init
        data=data_manifest,
        store=ancient(rules.tracking_store.output[0]),
    output:
        final=directory(L.run_file("{task}", "{variant}", "{seed}", "final")),
        best=directory(L.best_dir("{task}", "{variant}", "{seed}")),
        summary=L.run_file("{task}", "{variant}", "{seed}", "summary.json"),
        metrics=L.run_file("{task}", "{variant}", "{seed}", "metrics.jsonl"),
    params:
        variant=variant_of,
        hparams=hparams,
        run_dir=run_dir,
        study=STUDY,
        results=study_root_of_store,
        tracking_uri=TRACKING_URI,
        backend=backend_of,
    threads: train_threads
    priority: 1
    resources:
        **stage_resources("train"),
    conda:
        "../envs/opdpipe.yaml"
    log:
        L.log("train", "{task}", "{variant}", "seed{seed}"),
    benchmark:
        L.benchmark("train", "{task}", "{variant}", "seed{seed}")
    script:
        "../scripts/train.py"
