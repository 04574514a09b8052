import json
from dataclasses import asdict
from pathlib import Path

from _log import redirect, say
from opdpipe import distributed, train_job, trainer
from opdpipe.layout import Layout, default_tracking_uri

redirect(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
world = p.hparams.get("world_size", 1)  # > 1: data-parallel ranks through torchrun, each with its share of threads
kind = json.loads(Path(snakemake.input.data).read_text())["task"]  # a self-distillation group's: its source task
spec = trainer.RunSpec(task=kind, divergence=p.variant["divergence"], design=p.variant["design"], seed=int(w.seed),
                       student=snakemake.input.student, teacher=snakemake.input.teacher,
                       data_dir=str(Path(snakemake.input.data).parent), out_dir=p.run_dir,
                       hparams={**p.hparams, "threads": max(1, snakemake.threads // world)}, backend=p.backend)
uri = p.tracking_uri or default_tracking_uri(Layout(p.results))
# tracking.live is read here, not as a param: whether curves stream live changes no output, so it re-runs nothing
live = snakemake.config["tracking"]["live"]
job = {"variant": w.variant, "study": p.study, "tracking_uri": uri, "task": w.task, "live": live}  # the row's task (or group)
if world > 1:
    distributed.launch(spec, world, tracking={"uri": uri, "study": p.study, "task": w.task, "variant": w.variant,
                                              "seed": int(w.seed)} if live else None, log=say)
elif train_job.needs_other_python(spec):  # rollout.backend vllm: the extra lives in its own environment
    from opdpipe.backends.vllm_env import require

    train_job.run_in(require(), spec, job, say)
else:
    train_job.run_job({**job, "spec": asdict(spec)}, log=say)
