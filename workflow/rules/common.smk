# Helpers shared by the stage files. Paths follow from wildcards, values from the config.
import os
import json
import sys

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
    return opd_hparams(config, w.task, w.variant)


VARIANT_TABLE = {vid: {"divergence": v["divergence"], "design": v["design"]} for vid, v in variants(config).items()}


def variant_of(w):
    return VARIANT_TABLE[w.variant]


def world_params(w):
    """What the teacher / SFT-init stages depend on."""
    p = {"teacher": teacher_config(config, w.task), "student": config["student"],
         "max_new_tokens": config["tasks"][w.task]["max_new_tokens"]}
    return {**p, "chat": config["chat"]} if PRETRAINED else p


def reference_checkpoint(w):
    return {"teacher": f"{RESULTS}/{w.task}/teacher/checkpoint",
            "sft_init": f"{RESULTS}/{w.task}/sft_init/checkpoint"}[w.ref]


def all_run_dirs():
    return [f"{RESULTS}/{t}/{v}/seed{s}" for t in TASKS for v in VARIANTS for s in SEEDS]


def all_evals():
    runs = [f"{d}/eval.json" for d in all_run_dirs()]
    refs = [f"{RESULTS}/{t}/{r}/eval.json" for t in TASKS for r in REFERENCES]
    return refs + runs


# Pretrained models (opdpipe.backends): what the stages add for checkpoints with their own tokenizer.
from opdpipe.backends.study import backend_block, is_pretrained_study, mini_pair_dir

PRETRAINED = is_pretrained_study(config)
BACKEND = backend_block(config)  # {} for the embedded world


def mini_pair_outputs(w):
    """The mini pair's folders when this study builds it first, else nothing."""
    if "mini_pair" not in config:
        return []
    return [mini_pair_dir(STUDY, "teacher"), mini_pair_dir(STUDY, "student")]


def student_params(w):
    """The student block; a pretrained one carries the chat rendering its SFT prompts go through."""
    return {**config["student"], "chat": config["chat"]} if PRETRAINED else config["student"]


def eval_params(w):
    """The eval block; a pretrained study adds the chat rendering, dtype and device of lm-eval."""
    if not PRETRAINED:
        return config["eval"]
    s = config["student"]
    return {**config["eval"], "chat": config["chat"], "dtype": s.get("dtype", "float32"),
            "device": s.get("device", "cpu")}


def tokenizer_params(w):
    """Where the study's tokenizer comes from: the character tokenizer, or the checkpoints'."""
    if not PRETRAINED:
        return {"kind": "char"}
    return {"kind": "checkpoint", "teacher": config["teacher"], "student": config["student"]}
