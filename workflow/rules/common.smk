# Helpers shared by the stage files. Paths follow from wildcards, values from the config.
import os
import json
import sys

from opdpipe import resources as cluster
from opdpipe.config import opd_hparams, teacher_config, variants

STUDY = config["study"]
RESULTS = f"results/{STUDY}"
PY = sys.executable
TASKS = list(config["tasks"])
VARIANTS = list(variants(config))
SEEDS = config["seeds"]
REFERENCES = ["teacher", "sft_init"]


def run_dir(w):
    return f"{RESULTS}/{w.task}/{w.variant}/seed{w.seed}"


def hparams(w):
    """One variant's trainer hyperparameters: changing them re-runs exactly that variant."""
    hp = opd_hparams(config, w.task, w.variant)
    world = train_world_size(w)
    return hp if world == 1 else {**hp, "world_size": world}


def train_world_size(w):
    """Data-parallel ranks of one training run (opd.world_size, or one per GPU)."""
    return cluster.world_size(config, opd_hparams(config, w.task, w.variant))


def train_threads(w):
    """Cores of one training job: the study's torch threads for each of its ranks."""
    return config["threads"] * train_world_size(w)


def stage_resources(stage):
    """What a stage's jobs ask a cluster for (config `resources:`): gpu, mem_mb, runtime, cpus_per_task."""
    return cluster.snakemake_resources(config, stage)


VARIANT_TABLE = {vid: {"divergence": v["divergence"], "design": v["design"]} for vid, v in variants(config).items()}


def variant_of(w):
    return VARIANT_TABLE[w.variant]


def world_params(w):
    """What the teacher / SFT-init stages depend on."""
    return {"teacher": teacher_config(config, w.task), "student": config["student"],
            "max_new_tokens": config["tasks"][w.task]["max_new_tokens"]}


def reference_checkpoint(w):
    return {"teacher": f"{RESULTS}/{w.task}/teacher/checkpoint",
            "sft_init": f"{RESULTS}/{w.task}/sft_init/checkpoint"}[w.ref]


def all_run_dirs():
    return [f"{RESULTS}/{t}/{v}/seed{s}" for t in TASKS for v in VARIANTS for s in SEEDS]


def all_evals():
    runs = [f"{d}/eval.json" for d in all_run_dirs()]
    refs = [f"{RESULTS}/{t}/{r}/eval.json" for t in TASKS for r in REFERENCES]
    return refs + runs
