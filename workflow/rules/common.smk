# Helpers shared by the stage files. Paths follow from wildcards, values from the config.
import os
import json
import sys

from opdpipe.config import opd_hparams, teacher_config, variants
from opdpipe.tasks.benchmarks import BENCHMARKS, DEFAULT_GRADER as BENCHMARK_GRADER

STUDY = config["study"]
RESULTS = f"results/{STUDY}"
PY = sys.executable
TASKS = list(config["tasks"])
VARIANTS = list(variants(config))
SEEDS = config["seeds"]
REFERENCES = ["teacher", "sft_init"]
BENCHES = {t: sorted(config["tasks"][t].get("benchmarks", {})) for t in TASKS}  # math test sets per task


def run_dir(w):
    return f"{RESULTS}/{w.task}/{w.variant}/seed{w.seed}"


def hparams(w):
    """One variant's trainer hyperparameters: changing them re-runs exactly that variant."""
    return opd_hparams(config, w.task, w.variant)


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


def data_spec(w):
    """What prepare_data depends on: the task block without its benchmarks (adding one re-runs nothing)."""
    return {k: v for k, v in config["tasks"][w.task].items() if k != "benchmarks"}


def benchmark_source(w):
    return config["tasks"][w.task]["benchmarks"][w.bench]


def all_benchmark_evals():
    refs = [f"{RESULTS}/{t}/{r}/bench/{b}/eval.json" for t in TASKS for b in BENCHES[t] for r in REFERENCES]
    runs = [f"{RESULTS}/{t}/{v}/seed{s}/bench/{b}/eval.json" for t in TASKS for b in BENCHES[t] for v in VARIANTS
            for s in SEEDS]
    return refs + runs


def task_max_new_tokens(w):
    return config["tasks"][w.task]["max_new_tokens"]


def variant_checkpoints(w):
    """The final checkpoint of every seed of one variant (one lm-eval job evaluates them in turn)."""
    return expand(rules.train.output.final, task=w.task, variant=w.variant, seed=SEEDS)


def variant_labels(w):
    return [f"{w.variant}/seed{s}" for s in SEEDS]


def reference_checkpoints(w):
    return [reference_checkpoint(w)]


def reference_label(w):
    return [w.ref]
