from pathlib import Path

from _log import redirect, say
from opdpipe import tracking, trainer
from opdpipe.layout import Layout, default_tracking_uri

redirect(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
spec = trainer.RunSpec(task=w.task, divergence=p.variant["divergence"], design=p.variant["design"], seed=int(w.seed),
                       student=snakemake.input.student, teacher=snakemake.input.teacher,
                       data_dir=str(Path(snakemake.input.data).parent), out_dir=p.run_dir,
                       hparams={**p.hparams, "threads": snakemake.threads}, backend=p.backend)
uri = p.tracking_uri or default_tracking_uri(Layout(p.results))
live = tracking.LiveRun(uri, p.study, w.task, w.variant, int(w.seed), log=say)
try:
    trainer.run(spec, callbacks=(live.log_step,), log=say, progress=False)
finally:
    live.flush()
