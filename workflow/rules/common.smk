# Helpers shared by the stage files: every path comes from opdpipe.layout, every value from the
# config through a named function, so that changing a value re-runs exactly the jobs it affects.
import os
import sys

from opdpipe import resources as cluster
from opdpipe import self_distill, tracking
from opdpipe.config import opd_hparams, teacher_config, variants
from opdpipe.layout import FIGURES, REFERENCES, Layout
from opdpipe.provenance import config_hash
from opdpipe.tasks.benchmarks import BENCHMARKS, DEFAULT_GRADER as BENCHMARK_GRADER

STUDY = config["study"]
L = Layout.for_study(STUDY)
RESULTS = L.root
PY = sys.executable
SOURCE_TASKS = list(config["tasks"])  # the tasks with their own data and teacher stages
TASKS = self_distill.study_tasks(config)  # the study's column groups: the tasks, then the OPSD group if any
GROUPS = [self_distill.GROUP] if self_distill.enabled(config) else []  # self-distillation: no teacher stage
VARIANTS = list(variants(config))
SEEDS = config["seeds"]
VARIANT_TABLE = {vid: {"divergence": v["divergence"], "design": v["design"]} for vid, v in variants(config).items()}
# the tracking URI given in the config, or None: the sqlite store inside the study folder, resolved
# when the job runs (an absolute path here would re-run every job of a moved results folder)
TRACKING_URI = config["tracking"]["uri"]
# A damaged sqlite store (a write cut short) is set aside before the DAG is built: tracking_store then
# makes a new one and track rebuilds every run from the study's files, with no manual step.
# A store that is gone takes its read-back mirror (runs.json) with it, so that track runs again.
if workflow.is_main_process and not TRACKING_URI:
    tracking.set_aside_damaged(L.mlflow_db(), log=lambda m: print(m, file=sys.stderr))
    if not os.path.exists(L.mlflow_db()) and os.path.exists(L.tracking_file("runs.json")):
        os.remove(L.tracking_file("runs.json"))
BENCHES = {t: sorted(self_distill.task_block(config, t).get("benchmarks", {})) for t in TASKS}  # math test sets


# ---------------------------------------------------------------- per-job values
def task_spec(w):
    """What prepare_data depends on: the task block without its benchmarks (adding one re-runs nothing)."""
    return {k: v for k, v in config["tasks"][w.task].items() if k != "benchmarks"}


def benchmark_source(w):
    return self_distill.task_block(config, w.task)["benchmarks"][w.bench]


def max_new_tokens(w):
    return self_distill.task_block(config, w.task)["max_new_tokens"]


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


def variant_of(w):
    return VARIANT_TABLE[w.variant]


def teacher_params(w):
    """What the teacher stage depends on: its own block, the budget, and how many completions the
    SFT-init student will need (not the rest of the student block)."""
    p = {"teacher": teacher_config(config, w.task), "max_new_tokens": max_new_tokens(w),
         "num_completions": config["student"]["sft"]["num_examples"]}
    return {**p, "chat": config["chat"]} if PRETRAINED else p  # pretrained: prompts through the chat template


def tracking_store_outputs():
    """The store marker, and the sqlite store itself where the study keeps its own."""
    return [L.tracking_file("store.json")] + ([] if TRACKING_URI else [L.mlflow_db()])


def study_root_of_store(w, input):
    """results/<study>, from the tracking store marker the job reads (where mlflow.db lives)."""
    return os.path.dirname(os.path.dirname(input.store))


def study_root_of_output(w, output):
    return os.path.dirname(os.path.dirname(output[0]))


def run_dir(w):
    return L.run_dir(w.task, w.variant, w.seed)


def reference_checkpoint(w):
    """A reference row's checkpoint; a group's self-teacher is its SFT-init (evaluated with the hint)."""
    return [L.checkpoint(w.task, "sft_init" if w.task in GROUPS else w.ref)]


def variant_checkpoints(w):
    return [L.run_file(w.task, w.variant, s, "final") for s in SEEDS]


def variant_bests(w):
    return [L.best_dir(w.task, w.variant, s) for s in SEEDS]


def variant_summaries(w):
    return [L.run_file(w.task, w.variant, s, "summary.json") for s in SEEDS]


def variant_labels(w):
    return [f"{w.variant}/seed{s}" for s in SEEDS]


def reference_label(w):
    return ["self-teacher: sft_init with the reference solution" if w.task in GROUPS and w.ref == "teacher" else w.ref]


# ---------------------------------------------------------------- the study's rows
def reference_manifest(task, ref):
    """What made a reference row; the self-teacher of a group is its SFT-init checkpoint (no stage of its own)."""
    return L.path(task, "sft_init" if task in GROUPS else ref, "manifest.json")


def study_rows():
    """Every row of the study with the files that describe it: references first, then the runs."""
    rows = [{"task": t, "variant": r, "seed": None, "eval": L.eval_file(t, r),
             "manifest": reference_manifest(t, r)} for t in TASKS for r in REFERENCES]
    rows += [{"task": t, "variant": v, "seed": s, "eval": L.eval_file(t, v, s), "eval_best": L.eval_best_file(t, v, s),
              "summary": L.run_file(t, v, s, "summary.json"), "metrics": L.run_file(t, v, s, "metrics.jsonl")}
             for t in TASKS for v in VARIANTS for s in SEEDS]
    return rows


def all_evals():
    """Every evaluation: final/ of each row, and best/ of each trained run."""
    return [r[k] for r in study_rows() for k in ("eval", "eval_best") if k in r]


def all_summaries():
    return [r["summary"] for r in study_rows() if r["seed"] is not None]


def all_metrics():
    return [r["metrics"] for r in study_rows() if r["seed"] is not None]


def all_finals():
    return [L.run_file(t, v, s, "final") for t in TASKS for v in VARIANTS for s in SEEDS]


def all_hparams():
    return {f"{t}/{v}": opd_hparams(config, t, v) for t in TASKS for v in VARIANTS}


def world_block():
    """The world every reference row was built from (logged as MLflow params)."""
    keys = ("seed", "tasks", "teacher", "student", "eval") + (("self_distillation",) if GROUPS else ())
    return {k: config[k] for k in keys}


def report_settings():
    groups = {g: config["self_distillation"]["source"] for g in GROUPS}  # the report's Self-Distillation columns
    return {"study": STUDY, "tasks": TASKS, "seeds": SEEDS, "variants": VARIANT_TABLE,
            **({"self_distillation": groups} if groups else {})}


# ---------------------------------------------------------------- math benchmarks (AIME24, ...)
def benchmark_rows():
    """One line per (row of the study, benchmark its task names), with the eval file it reads."""
    return [{"task": r["task"], "variant": r["variant"], "seed": r["seed"], "bench": b,
             "eval": L.bench_eval_file(r["task"], r["variant"], b, r["seed"])}
            for r in study_rows() for b in BENCHES[r["task"]]
            if not (r["task"] in GROUPS and r["variant"] == "teacher")]  # benchmarks hold no reference solution


def all_benchmark_evals():
    return [r["eval"] for r in benchmark_rows()]


# ---------------------------------------------------------------- pretrained models (opdpipe.backends)
from opdpipe.backends.study import backend_block, is_pretrained_study

PRETRAINED = is_pretrained_study(config)
BACKEND = backend_block(config)  # {} for the embedded world


def mini_pair_outputs(w):
    """The mini pair's folders when this study builds it first, else nothing."""
    return [L.hub_dir("teacher"), L.hub_dir("student")] if "mini_pair" in config else []


def mini_pair_spec(w):
    return config.get("mini_pair", {})


def student_params(w):
    """The student block (a self-distillation group's own, where it has one); a pretrained one carries the
    chat rendering its SFT prompts go through."""
    student = self_distill.student_block(config, w.task)
    return {**student, "chat": config["chat"]} if PRETRAINED else student


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


# ---------------------------------------------------------------- the self-distillation group (opdpipe.self_distill)
def sft_examples(w):
    """SFT-init data: the task's teacher completions, or the group's (a share carrying the hint)."""
    return L.sft_examples_file(w.task) if w.task in GROUPS else L.path(w.task, "teacher", "completions.jsonl")


def teacher_checkpoint(w):
    """The frozen teacher of a run: the task's teacher, or the group's own SFT-init (the self-teacher)."""
    return L.checkpoint(w.task, self_distill.teacher_row(w.task))


def data_manifest(w):
    return L.path("data", w.task, "manifest.json")


def reference_test(w):
    """The test split a reference row is evaluated on: the self-teacher reads the privileged prompt."""
    return L.hint_test_file(w.task) if w.task in GROUPS and w.ref == "teacher" else L.data_file(w.task, "test")


def backend_of(w):
    """RunSpec.backend of a run; a group with its own student is its own teacher, in that student's dtype."""
    return backend_block(self_distill.models_of(config, w.task))


def group_spec():
    """What the group's SFT examples depend on (hint_frac re-runs its SFT-init, nothing of the source)."""
    sd = config["self_distillation"]
    return {"source": sd["source"], "hint_frac": sd["hint_frac"]}
