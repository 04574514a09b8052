"""MLflow mirrors what the workflow produced; it never decides what runs.

One experiment per study (``opdpipe-<study>``) with a parent run for the study and one child run per
(task, variant, seed), plus the teacher and SFT-init rows. Runs are found again by a stable key tag,
so re-running a job reuses (on resume) or replaces (on a fresh start) its run: never a duplicate.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from opdpipe import mlflow_views

KEY = "opdpipe.key"
BIAS_SUMMARY = ("bias/cos_expected", "bias/cos_sampled", "bias/relerr_expected")  # averaged per run


def default_uri(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def experiment_name(study: str) -> str:
    return f"opdpipe-{study}"


def mlflow_client(uri: str):
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def run_key(study: str, task: str, variant: str, seed: int | None) -> str:
    return f"{study}/{task}/{variant}" + ("" if seed is None else f"/seed{seed}")


def init_store(uri: str, study: str, artifact_dir: str | Path) -> dict:
    """Create the store, the study's experiment and its parent run, once, before parallel jobs."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment_name(study))
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment_name(study), artifact_location=Path(artifact_dir).resolve().as_uri(),
        tags={mlflow_views.EXPERIMENT_KIND_TAG: mlflow_views.EXPERIMENT_KIND})  # model training
    parent = _find(client, exp_id, run_key(study, "_study", "_all", None))
    if parent is None:
        parent = client.create_run(exp_id, run_name=study, tags={KEY: run_key(study, "_study", "_all", None),
                                                                 "opdpipe.kind": "study"}).info.run_id
    return {"uri": uri, "experiment_id": exp_id, "parent_run_id": parent}


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def store_is_sound(path: Path) -> bool:
    """A sqlite store that opens and passes its integrity check (a half-written file does not)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok" and \
                db.execute("select count(*) from sqlite_master where name = 'runs'").fetchone()[0] == 1
    except sqlite3.Error:
        return False


def ensure_store(uri: str, study: str, artifact_dir: str | Path, log=print) -> dict:
    """init_store, after setting aside a damaged sqlite store (mlflow.db.corrupt.<n>). MLflow only mirrors
    the study's files, so the track rule rebuilds every run of a new store from them, losing nothing."""
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        _forget_engines(uri)  # deleted: a cached engine would write into the unlinked file
    if path is not None and set_aside_damaged(path, log):
        _forget_engines(uri)
    return init_store(uri, study, artifact_dir)


def set_aside_damaged(path: str | Path, log=print) -> Path | None:
    """Move a damaged sqlite store to <name>.corrupt.<n> (returned); None when it is sound or absent."""
    path = Path(path)
    if not path.exists() or store_is_sound(path):
        return None
    n = 0
    while path.with_name(f"{path.name}.corrupt.{n}").exists():
        n += 1
    aside = path.with_name(f"{path.name}.corrupt.{n}")
    path.rename(aside)
    log(f"warning: MLflow store {path} is damaged; moved to {aside.name}, rebuilding it from the study's files")
    return aside


def _forget_engines(uri: str) -> None:
    """Drop MLflow's in-process caches of a store that was just replaced (pinned mlflow 3.17 internals;
    a fresh process, as every workflow job is, has none)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service import utils

        engine = SqlAlchemyStore._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()
        utils._tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    except (ImportError, AttributeError):
        pass


def _find(client, exp_id: str, key: str) -> str | None:
    runs = client.search_runs([exp_id], filter_string=f"tags.`{KEY}` = '{key}'", max_results=5)
    return runs[0].info.run_id if runs else None


def get_run(client, exp_id: str, parent_id: str, key: str, name: str, tags: dict, fresh: bool) -> str:
    """The run for `key`: replaced when `fresh`, else reused (created if missing)."""
    existing = _find(client, exp_id, key)
    if existing and fresh:
        client.delete_run(existing)
        existing = None
    if existing:
        return existing
    all_tags = {KEY: key, "mlflow.parentRunId": parent_id, **{k: str(v) for k, v in tags.items()}}
    return client.create_run(exp_id, run_name=name, tags=all_tags).info.run_id


class LiveRun:
    """Training callback: mirrors step metrics to MLflow while the run trains (best effort).

    Steps are sent in batches of `flush_every` (one store transaction each) and at `flush()`; the
    track rule later fills in any step a busy or failed store missed, from metrics.jsonl. A resumed
    run re-computes the steps between its checkpoint and the kill (the same numbers): those already
    in the store are not sent again, so no step is held twice. It never creates a store: that is the
    tracking_store rule's job, once, before the parallel jobs.
    """

    def __init__(self, uri: str, study: str, task: str, variant: str, seed: int, log=print, flush_every: int = 10):
        self.uri, self.study, self.task, self.variant, self.seed, self.log = uri, study, task, variant, seed, log
        self.flush_every = flush_every
        self.client, self.run_id, self.pending, self.fresh, self.logged = None, None, [], None, set()

    def _open(self, fresh: bool) -> None:
        path = sqlite_path(self.uri)
        if path is not None and not path.exists():
            raise FileNotFoundError(f"no MLflow store at {path}")
        self.client = mlflow_client(self.uri)
        exp = self.client.get_experiment_by_name(experiment_name(self.study))
        parent = _find(self.client, exp.experiment_id, run_key(self.study, "_study", "_all", None))
        self.run_id = get_run(self.client, exp.experiment_id, parent,
                              run_key(self.study, self.task, self.variant, self.seed),
                              f"{self.task}/{self.variant}/seed{self.seed}",
                              {"task": self.task, "variant": self.variant, "seed": self.seed}, fresh)
        self.logged = logged_steps(self.client, self.run_id)

    def log_step(self, step: int, metrics: dict) -> None:
        if self.fresh is None:
            self.fresh = step == 0  # a resumed run continues its MLflow run
        self.pending.append((step, metrics))
        if step == 0 or step % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        from mlflow.entities import Metric

        try:
            if self.run_id is None and self.pending:
                self._open(fresh=self.fresh)
            ts = int(time.time() * 1000)
            todo = [Metric(_safe(k), float(v), ts, step) for step, m in self.pending if step not in self.logged
                    for k, v in m.items() if isinstance(v, (int, float))]
            for i in range(0, len(todo), 1000):  # MLflow's per-request limit
                self.client.log_batch(self.run_id, metrics=todo[i:i + 1000])
            self.logged |= {step for step, _ in self.pending}
        except Exception as err:  # tracking must never kill a training run
            self.log(f"warning: live MLflow logging failed: {err!r}")
        self.pending = []


def logged_steps(client, run_id: str) -> set[int]:
    """Steps of a run's curves already in the store (step 0 holds only the validation accuracy)."""
    return {m.step for m in client.get_metric_history(run_id, "val/greedy_acc")} | \
           {m.step for m in client.get_metric_history(run_id, "loss")}


def _safe(name: str) -> str:
    return name.replace("@", "_at_")


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def _log_curves(client, run_id: str, metrics_path: Path) -> int:
    """Log the step metrics that live logging missed (e.g. a store that was busy); returns the count."""
    from mlflow.entities import Metric

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    have = logged_steps(client, run_id)
    missing = [r for r in rows if r["step"] not in have]
    for i in range(0, len(missing), 50):
        batch = [Metric(_safe(k), float(v), 0, r["step"]) for r in missing[i:i + 50] for k, v in r.items()
                 if k != "step" and isinstance(v, (int, float))]
        client.log_batch(run_id, metrics=batch)
    return len(missing)


def track_entry(client, store: dict, study: str, entry: dict) -> str:
    """Mirror one produced run (or reference row) into MLflow: params, tags, metrics, artifacts.

    Idempotent: a re-run of `track` adds nothing to an up-to-date run; a run whose params or evaluation
    changed is replaced, so no metric step is ever held twice."""
    from mlflow.entities import Metric, Param

    key = run_key(study, entry["task"], entry["variant"], entry.get("seed"))
    params = {k: v[:6000] for k, v in flatten(entry["params"]).items()}
    evals = {f"eval/{_safe(k)}": float(v) for k, v in entry["eval_metrics"].items()} | \
        {k: float(v) for k, v in entry.get("summary_metrics", {}).items()}
    args = (client, store["experiment_id"], store["parent_run_id"], key, entry["name"], entry["tags"])
    run_id = get_run(*args, fresh=False)
    data = client.get_run(run_id).data
    if any(data.params.get(k, v) != v for k, v in params.items()) or \
            any(data.metrics.get(k, v) != v for k, v in evals.items()):  # the run changed: replace it
        run_id = get_run(*args, fresh=True)
        data = client.get_run(run_id).data
    todo = [Param(k, v) for k, v in params.items() if k not in data.params]
    for i in range(0, len(todo), 100):
        client.log_batch(run_id, params=todo[i:i + 100])
    for k, v in entry["tags"].items():
        client.set_tag(run_id, k, str(v))
    if entry.get("metrics_jsonl"):
        _log_curves(client, run_id, Path(entry["metrics_jsonl"]))
    ts = int(time.time() * 1000)
    new = [Metric(k, v, ts, 0) for k, v in evals.items() if k not in data.metrics]
    if new:
        client.log_batch(run_id, metrics=new)
    for path in entry.get("artifacts", []):
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def study_entry(row: dict, world: dict, variant: dict | None, hparams: dict | None) -> dict:
    """What `track_entry` mirrors for one row of the study, from the files the rule names in `row`:
    {task, variant, seed (None for teacher / SFT-init), eval, and manifest or summary + metrics}."""
    ev = json.loads(Path(row["eval"]).read_text())
    metrics = {k: ev[k] for k in ("greedy_acc", "greedy_acc_stderr", "avg_at_k", "avg_at_k_stderr", "pass_at_k")}
    metrics["avg_at_k_n"] = ev["n_samples"]
    task, vid, seed = row["task"], row["variant"], row["seed"]
    entry = {"task": task, "variant": vid, "seed": seed, "eval_metrics": metrics,
             "name": f"{task}/{vid}" + ("" if seed is None else f"/seed{seed}"), "artifacts": [row["eval"]]}
    if seed is None:  # a reference row: teacher or SFT-init
        manifest = json.loads(Path(row["manifest"]).read_text())
        entry["tags"] = {"task": task, "variant": vid, "kind": "reference", "config_hash": manifest["config_hash"]}
        entry["params"] = {"world": world}
        entry["artifacts"].append(row["manifest"])
        return entry
    summary = json.loads(Path(row["summary"]).read_text())
    entry["summary_metrics"] = best_metrics(row, summary)
    entry["tags"] = {"task": task, "variant": vid, "seed": seed, "kind": "run", **variant,
                     "config_hash": summary["config_hash"], "code_version": summary["code_version"]}
    entry["params"] = {"opd": hparams, **variant, "world": world}
    entry["metrics_jsonl"] = row["metrics"]
    entry["artifacts"] += [row["summary"], row["metrics"]] + ([row["eval_best"]] if row.get("eval_best") else [])
    return entry


def best_metrics(row: dict, summary: dict) -> dict[str, float]:
    """The best-by-validation checkpoint of a run: its step, validation avg@k and lm-eval test numbers
    (`eval_best/...`, beside final's `eval/...`)."""
    if not row.get("eval_best") or "best" not in summary:
        return {}
    ev = json.loads(Path(row["eval_best"]).read_text())
    return {"best/step": float(summary["best"]["step"]), "best/val_avg_at_k": float(summary["best"]["value"]),
            **{f"eval_best/{_safe(k)}": float(ev[k]) for k in ("avg_at_k", "avg_at_k_stderr", "greedy_acc")}}


def mirror_study(uri: str, study: str, artifact_dir: str | Path, rows: list[dict], world: dict,
                 variants: dict, hparams: dict, close_tags: dict, log=print) -> list[dict]:
    """The track rule: mirror every row of the study (rebuilding a damaged or missing store from the
    files), close the study's parent run and return the runs read back from the store."""
    store = ensure_store(uri, study, artifact_dir, log)
    client = mlflow_client(uri)
    entries = []
    for row in rows:
        run = row["seed"] is not None
        entries.append(study_entry(row, world, variants[row["variant"]] if run else None,
                                   hparams[f"{row['task']}/{row['variant']}"] if run else None))
    for entry in add_review_fields(entries):
        log(f"tracked {entry['name']} -> {track_entry(client, store, study, entry)}")
    back = read_back(uri, study)
    close_study(client, store, {**close_tags, "runs": len(back)})
    return back


def is_collapsed(mean_avg_at_k: float, sft_init_avg_at_k: float) -> bool:
    """A variant collapsed when its mean avg@k over seeds falls below the SFT-init student's."""
    return mean_avg_at_k < sft_init_avg_at_k


def bias_summary(metrics_jsonl: str | Path) -> dict[str, float]:
    """Mean of each bias-meter reading over the run (`bias_summary/<name>_mean`); empty if never measured."""
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    out = {}
    for key in BIAS_SUMMARY:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if values:
            out[f"bias_summary/{key.split('/', 1)[1]}_mean"] = sum(values) / len(values)
    return out


def add_review_fields(entries: list[dict]) -> list[dict]:
    """What a reviewer sorts and groups by, on every row: task / variant / seed as params too, the
    collapsed flag of the variant (as a tag) and the bias-meter summary (as metrics)."""
    avg: dict[tuple[str, str], list[float]] = {}
    for e in entries:
        avg.setdefault((e["task"], e["variant"]), []).append(e["eval_metrics"]["avg_at_k"])
    for e in entries:
        run = e.get("seed") is not None
        base = avg[(e["task"], "sft_init")][0]
        scores = avg[(e["task"], e["variant"])]
        e["tags"]["collapsed"] = str(run and is_collapsed(sum(scores) / len(scores), base)).lower()
        if not run:  # a reference row sorts and groups beside the variants: no divergence, its own design
            e["tags"] = {"divergence": "none", "design": e["variant"], **e["tags"]}
        e["params"] = {"task": e["task"], "variant": e["variant"], **({"seed": e["seed"]} if run else {}), **e["params"]}
        if e.get("metrics_jsonl"):
            e["summary_metrics"] = {**e.get("summary_metrics", {}), **bias_summary(e["metrics_jsonl"])}
    return entries


def publish_views(uri: str, study: str, rows: list[dict]) -> dict:
    """The study's UI views (experiment tags) and their links, for runs.json: {experiment_id, tasks, links}."""
    client = mlflow_client(uri)
    exp_id = client.get_experiment_by_name(experiment_name(study)).experiment_id
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    return {"experiment_id": exp_id, "tasks": tasks, "links": mlflow_views.publish(client, exp_id, tasks, rows)}


def log_report(client, store: dict, report_dir: str | Path) -> list[str]:
    """The report (md, html, figures) as artifacts of the study's parent run, under report/."""
    client.log_artifacts(store["parent_run_id"], str(report_dir), artifact_path="report")
    return sorted(a.path for a in client.list_artifacts(store["parent_run_id"], "report"))


def close_study(client, store: dict, tags: dict) -> None:
    """Tag the study's parent run and mark it finished once every row is mirrored (the UI shows the
    study done; a later re-run of one variant still files its child run under it)."""
    for k, v in tags.items():
        client.set_tag(store["parent_run_id"], f"opdpipe.{k}", str(v))
    client.set_terminated(store["parent_run_id"], "FINISHED")


def read_back(uri: str, study: str) -> list[dict]:
    """Every active run of the study's experiment, as plain rows (the report's proof of round-trip)."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment_name(study))
    rows = []
    for r in client.search_runs([exp.experiment_id], max_results=5000, order_by=["attributes.run_name ASC"]):
        if r.data.tags.get("opdpipe.kind") == "study":
            continue
        rows.append({"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
                     "task": r.data.tags.get("task"), "variant": r.data.tags.get("variant"),
                     "seed": r.data.tags.get("seed"), "config_hash": r.data.tags.get("config_hash"),
                     "collapsed": r.data.tags.get("collapsed"),
                     "avg_at_k": r.data.metrics.get("eval/avg_at_k"),
                     "best_avg_at_k": r.data.metrics.get("eval_best/avg_at_k"),
                     "best_step": r.data.metrics.get("best/step"),
                     "greedy_acc": r.data.metrics.get("eval/greedy_acc")})
    return rows
