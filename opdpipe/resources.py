"""What each workflow stage asks a cluster scheduler for, and how many ranks a training run uses.

The study config's `resources:` block holds a `default` (every stage) and per-stage overrides
(`data`, `teacher`, `sft_init`, `train`, `evaluate`, `track`, `report`); the schema gives the
defaults. A Snakemake rule turns a stage's block into its `resources:` (the names the SLURM
executor reads: `gpu`, `cpus_per_task`, `mem_mb`, `runtime`). Local `--cores` runs ignore them.

One training run spans `world` ranks (data-parallel, opdpipe.distributed): `opd.world_size` on CPU,
or one rank per GPU when `resources.train.gpus > 1`.
"""
from __future__ import annotations

from opdpipe.hparams import DEFAULTS

STAGES = ("data", "teacher", "sft_init", "train", "evaluate", "track", "report")


def stage_resources(cfg: dict, stage: str) -> dict:
    """The merged `default` + `<stage>` block of a validated config."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    res = cfg["resources"]
    return {**res["default"], **res.get(stage, {})}


def snakemake_resources(cfg: dict, stage: str) -> dict:
    """A rule's `resources:` for the SLURM executor; cpus_per_task absent = the rule's threads."""
    r = stage_resources(cfg, stage)
    out = {"gpu": r["gpus"], "mem_mb": r["mem_mb"], "runtime": r["runtime"]}
    if r.get("cpus_per_task") is not None:
        out["cpus_per_task"] = r["cpus_per_task"]
    return out


def world_size(cfg: dict, hparams: dict) -> int:
    """Ranks of one training run: one per GPU when resources.train.gpus > 1, else opd.world_size."""
    gpus = stage_resources(cfg, "train")["gpus"]
    asked = hparams.get("world_size", 1)
    if gpus > 1 and asked not in (1, gpus):
        raise ValueError(f"opd.world_size = {asked}: resources.train.gpus = {gpus} asks for one rank per GPU; "
                         f"allowed: leave opd.world_size out or set it to {gpus}")
    return gpus if gpus > 1 else asked


def check_world(world: int, hparams: dict, where: str) -> None:
    """Every rank takes the same share of the step's prompts and the same number of minibatches."""
    if world == 1:
        return
    hp = {**DEFAULTS, **hparams}
    prompts = hp["prompts_per_step"]
    rollouts = prompts // world * hp["group_size"]
    if prompts % world:
        raise ValueError(f"opd.prompts_per_step = {prompts} ({where}): must be divisible by the world size {world} "
                         "(each rank samples an equal share of the step's prompts)")
    if rollouts % hp["num_substeps"]:
        raise ValueError(f"opd.num_substeps = {hp['num_substeps']} ({where}): must divide each rank's "
                         f"{rollouts} rollouts (world size {world})")
