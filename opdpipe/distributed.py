"""Data-parallel OPD training: one process per rank, launched by torchrun, gradients all-reduced (DDP).

Each rank draws its own `prompts_per_step / world_size` prompts (its own generator: rank 0 keeps the
run's seed, so one rank is exactly the single-process run), samples their rollouts and scores them
with its copy of the teacher. The loss of each rank is its share of the global loss (the global
token or sequence count is all-reduced first), so DDP's gradient average equals the gradient of the
whole batch in one process. Gradient clipping and AdamW then see identical gradients on every rank
and the replicas stay equal. Only rank 0 validates, writes metrics, checkpoints and MLflow; the
checkpoint holds every rank's random state, so a resumed run continues exactly.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m opdpipe.distributed launch.json

Backend: gloo on CPU (this project's trainer keeps its models on the CPU).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from opdpipe.provenance import atomic_write_json


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> Context:
    """This process's place in the run: torchrun's RANK / WORLD_SIZE, one rank when absent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Context(dist.get_rank(), dist.get_world_size())


def rank_seed(seed: int, ctx: Context) -> int:
    """Rollout / prompt seed of a rank: rank 0 keeps the run's seed, the others get disjoint ones."""
    return seed + (ctx.rank << 32)


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """The module the gradient passes go through: DDP over the model when there are several ranks."""
    if not ctx.active:
        return model
    return torch.nn.parallel.DistributedDataParallel(model)


def _all_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def loss_share(ctx: Context, agg: str, mask: torch.Tensor) -> float:
    """Factor turning a rank's mean loss into its share of the global mean (times world size, as
    DDP averages gradients): local_count / global_count * world_size."""
    local = float(mask.sum()) if agg == "token_mean" else float(mask.shape[0])
    return local * ctx.world_size / _all_sum([local])[0]


def normalize_advantages(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """z-score with the mean and (unbiased) std of the whole batch across ranks."""
    m = mask.bool()
    n, s, ss = _all_sum([float(m.sum()), adv[m].sum().item(), (adv[m].double() ** 2).sum().item()])
    mean = s / n
    std = max((ss - n * mean * mean) / max(n - 1, 1), 0.0) ** 0.5
    return torch.where(m, (adv - mean) / (std + 1e-8), adv)


SUMMED = ("tokens_per_s",)  # throughput of the whole job
TOKEN_MEANS = ("log_u/mean", "kl/reverse_est", "f_u/mean", "log_u/clip_frac", "loss/ratio_clip_frac", "adv/mean")
EXTREMES = {"adv/min": dist.ReduceOp.MIN, "adv/max": dist.ReduceOp.MAX}


def reduce_metrics(metrics: dict, ctx: Context, tokens: int) -> dict:
    """Step metrics of the whole batch from each rank's (`tokens` response tokens here): token means
    weighted by tokens, adv/std pooled, extremes reduced, throughput summed; the rest are means over
    ranks, exact for sequence-level metrics as every rank holds the same number of sequences."""
    if not ctx.active:
        return metrics
    keys = [k for k in sorted(metrics) if k not in EXTREMES and k != "adv/std"]
    weight = {k: float(tokens) if k in TOKEN_MEANS else 1.0 for k in keys}
    second = metrics["adv/std"] ** 2 + metrics["adv/mean"] ** 2  # E[adv^2] on this rank
    total = dict(zip(keys + ["_n", "_adv2"], _all_sum([metrics[k] * weight[k] for k in keys] +
                                                      [float(tokens), second * tokens])))
    n = total.pop("_n")
    out = {k: v if k in SUMMED else v / (n if k in TOKEN_MEANS else ctx.world_size) for k, v in total.items()}
    out["adv/std"] = max(out.pop("_adv2") * ctx.world_size / n - out["adv/mean"] ** 2, 0.0) ** 0.5
    for k, op in EXTREMES.items():
        t = torch.tensor(metrics[k], dtype=torch.float64)
        dist.all_reduce(t, op=op)
        out[k] = t.item()
    return out


def gather(obj, ctx: Context) -> list:
    """Every rank's `obj` (e.g. its random state), in rank order."""
    if not ctx.active:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def close(ctx: Context) -> None:
    """Leave the process group. After the last barrier, gloo's worker thread still has to free that
    barrier's work, which takes the GIL; the short sleep hands it the GIL, so the group's destructor
    (run later, when DDP's reducer is freed with the GIL held) never waits on that thread forever."""
    if ctx.active and dist.is_initialized():
        dist.barrier()
        time.sleep(0.5)
        dist.destroy_process_group()


# ---------------------------------------------------------------- launching a run on several ranks
def launch(spec, world_size: int, tracking: dict | None = None, log=print) -> None:
    """Run one training run on `world_size` local ranks through torchrun; raise if any rank fails."""
    job = Path(spec.out_dir) / "work" / "launch.json"
    job.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job, {"spec": asdict(spec), "tracking": tracking})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", str(world_size), "-m", "opdpipe.distributed", str(job)]
    log("launching: " + " ".join(cmd))
    sys.stdout.flush()
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.hparams.get("threads", 1))}
    r = subprocess.run(cmd, stdout=sys.stdout, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        raise RuntimeError(f"torchrun with {world_size} ranks exited with code {r.returncode}")


def main(argv: list[str] | None = None) -> None:
    """One rank of a launched run: rebuild the RunSpec, train; rank 0 also mirrors to MLflow."""
    from opdpipe import tracking, trainer

    job = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    spec = trainer.RunSpec(**job["spec"])
    ctx = context()
    live = tracking.LiveRun(**job["tracking"]) if job.get("tracking") and ctx.is_main else None
    try:
        trainer.run(spec, callbacks=(live.log_step,) if live else (), progress=False,
                    log=print if ctx.is_main else (lambda msg: None))
    finally:
        if live:
            live.flush()
    close(ctx)  # not after a failure: a rank that raised exits at once and torchrun stops the others


if __name__ == "__main__":
    main()
