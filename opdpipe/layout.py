"""The output layout of a study: every path under ``results/<study>/`` comes from here.

The workflow, the command line, the benchmarks and the report all ask this module where a thing
lives, so the layout has one owner. Arguments may be real values or Snakemake wildcards such as
``"{task}"``; the methods only join strings.

    results/<study>/
      data/<task>/{train,validation,test}.jsonl, manifest.json
      data/opsd/{test_hint,sft}.jsonl               the self-distillation group (opdpipe.self_distill)
      hub/{teacher,student}/, hub/manifest.json     (a study with a mini_pair block)
      tokenizer/tokenizer.json
      <task>/{teacher,sft_init}/{checkpoint/, manifest.json, eval.json}
      <task>/<variant>/seed<k>/{final/, best/, metrics.jsonl, summary.json, eval.json, eval_best.json, work/}
      data/<task>/bench/<bench>/{test.jsonl, manifest.json}       math benchmarks the task names
      <task>/<row>/bench/<bench>/eval.json, <task>/<variant>/seed<k>/bench/<bench>/eval.json
      mlflow.db, mlartifacts/, tracking/{store.json, runs.json}
      report/{report.md, report.html, figures/<name>.png}
      logs/, benchmarks/
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RESULTS_ROOT = "results"
REFERENCES = ("teacher", "sft_init")
# Every name that becomes a path component (study, variant): starts with a letter or digit (so never
# "." or ".."), then letters, digits and _ . : + - only (no spaces, no slashes), at most 64 characters.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$"
STUDY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # also a shell word and an MLflow experiment name
FIGURES = ("curves", "greedy", "sampled", "grad_norm", "log_ratio", "length", "bias")


def check_name(key: str, value, pattern: str = NAME_PATTERN) -> str:
    """Return `value` if it is a safe path component, else raise naming the key, value and rule."""
    if not isinstance(value, str) or not re.fullmatch(pattern, value) or ".." in value:
        rule = ("letters, digits, '_' and '-'" if pattern == STUDY_PATTERN else
                "letters, digits and _ . : + -, no '..'")
        raise ValueError(f"{key} = {value!r}: a name used in paths must start with a letter or digit and "
                         f"contain only {rule}, at most 64 characters")
    return value


@dataclass(frozen=True)
class Layout:
    """Paths of one study. `root` is results/<study> (relative to the working directory by default)."""

    root: str

    @classmethod
    def for_study(cls, study: str, base: str | Path = RESULTS_ROOT) -> "Layout":
        return cls(f"{base}/{check_name('study', study, STUDY_PATTERN)}")

    def path(self, *parts) -> str:
        return "/".join([self.root, *map(str, parts)])

    # ------------------------------------------------------------ world
    def data_dir(self, task) -> str:
        return self.path("data", task)

    def data_file(self, task, split) -> str:
        return self.path("data", task, f"{split}.jsonl")

    def hint_test_file(self, group) -> str:
        """A self-distillation group's test split with the privileged prompt (the self-teacher's row)."""
        return self.path("data", group, "test_hint.jsonl")

    def sft_examples_file(self, group) -> str:
        """A self-distillation group's SFT-init examples (teacher completions, a share with the hint)."""
        return self.path("data", group, "sft.jsonl")

    def hub_dir(self, role) -> str:
        """A model built here in hub-snapshot layout (the mini pair's teacher / student)."""
        return self.path("hub", role)

    def tokenizer_file(self) -> str:
        return self.path("tokenizer", "tokenizer.json")

    def reference_dir(self, task, ref) -> str:
        return self.path(task, ref)

    def checkpoint(self, task, ref) -> str:
        return self.path(task, ref, "checkpoint")

    # ------------------------------------------------------------ runs
    def run_dir(self, task, variant, seed) -> str:
        return self.path(task, variant, f"seed{seed}")

    def run_file(self, task, variant, seed, name) -> str:
        return self.path(task, variant, f"seed{seed}", name)

    def eval_file(self, task, variant, seed=None) -> str:
        """eval.json of a run, or of a reference row (teacher / SFT-init) when seed is None."""
        if seed is None:
            return self.path(task, variant, "eval.json")
        return self.run_file(task, variant, seed, "eval.json")

    def best_dir(self, task, variant, seed) -> str:
        """The checkpoint chosen by validation avg@k (opdpipe.validation); final/ is the last step's."""
        return self.run_file(task, variant, seed, "best")

    def eval_best_file(self, task, variant, seed) -> str:
        """eval.json of a run's best-by-validation checkpoint (final's, reused, when best is the last step)."""
        return self.run_file(task, variant, seed, "eval_best.json")

    # ------------------------------------------------------------ math benchmarks (AIME24, ...)
    def bench_data_file(self, task, bench, name="test.jsonl") -> str:
        return self.path("data", task, "bench", bench, name)

    def bench_eval_file(self, task, variant, bench, seed=None) -> str:
        """eval.json of one benchmark for a run, or for a reference row when seed is None."""
        row = [task, variant] if seed is None else [task, variant, f"seed{seed}"]
        return self.path(*row, "bench", bench, "eval.json")

    # ------------------------------------------------------------ tracking, report, logs
    def mlflow_db(self) -> str:
        return self.path("mlflow.db")

    def mlartifacts(self) -> str:
        return self.path("mlartifacts")

    def tracking_file(self, name) -> str:
        return self.path("tracking", name)

    def report_file(self, name) -> str:
        return self.path("report", name)

    def figure(self, name) -> str:
        return self.path("report", "figures", f"{name}.png")

    def log(self, *parts) -> str:
        return self.path("logs", *parts[:-1], f"{parts[-1]}.log")

    def benchmark(self, *parts) -> str:
        return self.path("benchmarks", *parts[:-1], f"{parts[-1]}.tsv")


def default_tracking_uri(layout: Layout) -> str:
    """sqlite store inside the study folder, resolved when a job runs (never stored in rule params,
    so a moved or copied results folder keeps working without re-running anything)."""
    return f"sqlite:///{Path(layout.mlflow_db()).resolve()}"
