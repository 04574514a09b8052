from dataclasses import asdict
from pathlib import Path

from _log import redirect, say
from opdpipe import train_job, trainer
from opdpipe.layout import Layout, default_tracking_uri

redirect(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
spec = trainer.RunSpec(task=w.task, divergence=p.variant["divergence"], design=p.variant["design"], seed=int(w.seed),
                       student=snakemake.input.student, teacher=snakemake.input.teacher,
                       data_dir=str(Path(snakemake.input.data).parent), out_dir=p.run_dir,
                       hparams={**p.hparams, "threads": snakemake.threads}, backend=p.backend)
job = {"variant": w.variant, "study": p.study,
       "tracking_uri": p.tracking_uri or default_tracking_uri(Layout(p.results))}
if train_job.needs_other_python(spec):  # rollout.backend vllm: the extra lives in its own environment
    from opdpipe.backends.vllm_env import require

    train_job.run_in(require(), spec, job, say)
else:
    train_job.run_job({**job, "spec": asdict(spec)}, log=say)
