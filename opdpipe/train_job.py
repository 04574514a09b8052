"""One train job as the workflow runs it: a RunSpec, live MLflow logging, `trainer.run`.

The job runs in the workflow's interpreter, except with `rollout.backend: vllm` where that one
cannot import vllm: then it runs, unchanged, in the vLLM extra's interpreter
(opdpipe.backends.vllm_env), as `python -m opdpipe.train_job <job.json>`, writing to the same log.

    job = {"spec": asdict(RunSpec), "variant": id, "study": name, "tracking_uri": uri,
           "task": the study's task or self-distillation group (default spec.task),
           "live": tracking.live (default true): log the curves to MLflow while training}
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from opdpipe.checkpoints import WORK
from opdpipe.provenance import atomic_write_json


def needs_other_python(spec) -> bool:
    from opdpipe.backends import vllm_env

    return (spec.backend.get("rollout") or {}).get("backend") == "vllm" and not vllm_env.here()


def run_job(job: dict, log=print) -> None:
    """Train one variant, mirroring its steps to MLflow while it trains where mlflow is installed and
    `tracking.live` is on (else the track rule logs every step from metrics.jsonl afterwards)."""
    from opdpipe import trainer

    spec = trainer.RunSpec(**job["spec"])
    live = None
    if not job.get("live", True):
        log("tracking.live is false: no live logging; the track rule logs the steps when the study ends")
    elif importlib.util.find_spec("mlflow") is not None:
        from opdpipe import tracking

        live = tracking.LiveRun(job["tracking_uri"], job["study"], job.get("task", spec.task), job["variant"],
                                spec.seed, log=log)
    else:
        log(f"mlflow is not installed in {sys.executable}: no live logging; the track rule logs the steps")
    try:
        trainer.run(spec, callbacks=(live.log_step,) if live else (), log=log, progress=False)
    finally:
        if live:
            live.flush()


def run_in(python: str, spec, job: dict, log) -> None:
    """Run the job in another interpreter; its output goes where this job's goes. Raises on failure."""
    from opdpipe.backends.vllm_env import REPO

    path = Path(spec.out_dir) / WORK / "job.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**job, "spec": asdict(spec)})
    paths = [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # this working tree, installed there or not
    log(f"rollout.backend = vllm: the job runs in {python}")
    sys.stdout.flush()
    r = subprocess.run([python, "-m", "opdpipe.train_job", str(path)], env=env, stdout=sys.stdout,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"the train job in {python} failed (exit {r.returncode}); its output is above")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m opdpipe.train_job <job.json>")
    run_job(json.loads(Path(args[0]).read_text()), log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
