from pathlib import Path

from _log import redirect, say
from opdpipe import tracking, trainer

redirect(snakemake.log[0])
w = snakemake.wildcards
spec = trainer.RunSpec(task=w.task, divergence=snakemake.params.variant["divergence"],
                       design=snakemake.params.variant["design"], seed=int(w.seed),
                       student=snakemake.input.student, teacher=snakemake.input.teacher,
                       data_dir=str(Path(snakemake.input.data).parent), out_dir=snakemake.params.run_dir,
                       hparams={**snakemake.params.hparams, "threads": snakemake.threads},
                       backend=snakemake.params.backend)
live = tracking.LiveRun(snakemake.params.tracking_uri, snakemake.config["study"], w.task, w.variant, int(w.seed),
                        log=say)
try:
    trainer.run(spec, callbacks=(live.log_step,), log=say, progress=False)
finally:
    live.flush()
