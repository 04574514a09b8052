"""Mirror every output of the study into MLflow, then read the runs back for the report."""
import json
from pathlib import Path

from _log import redirect, say
from opdpipe import mlflow_views, tracking
from opdpipe.provenance import atomic_write_json, code_version, config_hash

redirect(snakemake.log[0])
cfg = snakemake.config
store = json.loads(Path(snakemake.input.store[0]).read_text())
client = tracking.mlflow_client(snakemake.params.uri)
world = {k: cfg[k] for k in ("seed", "tasks", "teacher", "student", "eval")}
entries = []
for path in map(Path, snakemake.input.evals):
    ev = json.loads(path.read_text())
    task, variant = path.parts[-3], path.parts[-2]
    seed = None
    if variant.startswith("seed"):
        task, variant, seed = path.parts[-4], path.parts[-3], int(variant[4:])
    metrics = {k: ev[k] for k in ("greedy_acc", "greedy_acc_stderr", "avg_at_k", "avg_at_k_stderr", "pass_at_k")}
    metrics["avg_at_k_n"] = ev["n_samples"]
    entry = {"task": task, "variant": variant, "seed": seed, "eval_metrics": metrics,
             "name": f"{task}/{variant}" + ("" if seed is None else f"/seed{seed}"),
             "artifacts": [path]}
    if seed is None:  # a reference row: teacher or SFT-init
        manifest = json.loads((path.parent / "manifest.json").read_text())
        entry["tags"] = {"task": task, "variant": variant, "kind": "reference",
                         "config_hash": manifest["config_hash"]}
        entry["params"] = {"world": world}
        entry["artifacts"].append(path.parent / "manifest.json")
    else:
        summary = json.loads((path.parent / "summary.json").read_text())
        v = snakemake.params.variants[variant]
        entry["tags"] = {"task": task, "variant": variant, "seed": seed, "kind": "run", **v,
                         "config_hash": summary["config_hash"], "code_version": summary["code_version"]}
        entry["params"] = {"opd": snakemake.params.hparams[f"{task}/{variant}"], **v, "world": world}
        entry["metrics_jsonl"] = path.parent / "metrics.jsonl"
        entry["artifacts"] += [path.parent / "summary.json", path.parent / "metrics.jsonl"]
    entries.append(entry)
for entry in tracking.add_review_fields(entries):
    run_id = tracking.track_entry(client, store, cfg["study"], entry)
    say(f"tracked {entry['name']} -> {run_id}")
rows = tracking.read_back(snakemake.params.uri, cfg["study"])
links = mlflow_views.publish(client, store["experiment_id"], list(cfg["tasks"]), rows)
tracking.close_study(client, store, {"config_hash": config_hash(cfg), "code_version": code_version(), "runs": len(rows)})
atomic_write_json(snakemake.output[0], {"uri": snakemake.params.uri, "experiment": tracking.experiment_name(cfg["study"]),
                                        "experiment_id": store["experiment_id"], "tasks": list(cfg["tasks"]),
                                        "links": links, "runs": rows})
say(f"read back {len(rows)} runs")
