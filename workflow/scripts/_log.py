"""Shared by the rule scripts: send stdout/stderr of a job to its Snakemake log file."""
import os
import sys

from opdpipe.worker import JOB_ENV, delegate

for _key, _value in JOB_ENV.items():  # offline hubs, no telemetry: before anything reads them
    os.environ.setdefault(_key, _value)
delegate()  # in a local run the rest of this script runs in the resident worker (opdpipe.worker), if there is one


def redirect(log_path: str) -> None:
    fh = open(log_path, "w", buffering=1)
    sys.stdout = sys.stderr = fh


def say(msg: str) -> None:
    print(msg, flush=True)
