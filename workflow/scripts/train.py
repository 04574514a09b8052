from pathlib import Path

from _log import redirect, say
from opdpipe import distributed, tracking, trainer

redirect(snakemake.log[0])
w = snakemake.wildcards
hp = snakemake.params.hparams
world = hp.get("world_size", 1)  # > 1: data-parallel ranks through torchrun, each with its share of the threads
spec = trainer.RunSpec(task=w.task, divergence=snakemake.params.variant["divergence"],
                       design=snakemake.params.variant["design"], seed=int(w.seed),
                       student=snakemake.input.student, teacher=snakemake.input.teacher,
                       data_dir=str(Path(snakemake.input.data).parent), out_dir=snakemake.params.run_dir,
                       hparams={**hp, "threads": max(1, snakemake.threads // world)})
run = {"uri": snakemake.params.tracking_uri, "study": snakemake.config["study"], "task": w.task,
       "variant": w.variant, "seed": int(w.seed)}
if world > 1:
    distributed.launch(spec, world, tracking=run, log=say)
else:
    live = tracking.LiveRun(**run, log=say)
    try:
        trainer.run(spec, callbacks=(live.log_step,), log=say, progress=False)
    finally:
        live.flush()
