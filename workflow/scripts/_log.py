"""Shared by the rule scripts: send stdout/stderr of a job to its Snakemake log file."""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def redirect(log_path: str) -> None:
    fh = open(log_path, "w", buffering=1)
    sys.stdout = sys.stderr = fh


def say(msg: str) -> None:
    print(msg, flush=True)
