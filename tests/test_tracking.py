"""Live MLflow logging: curves appear while a run trains, and no job ever makes a second run."""
from opdpipe import tracking


def _history(client, run_id):
    return [m.step for m in client.get_metric_history(run_id, "loss")]


def _active_runs(client, store):
    runs = client.search_runs([store["experiment_id"]], filter_string="tags.task = 'math'")
    return [r.info.run_id for r in runs]


def test_live_run_streams_batches_and_resumes_into_the_same_run(tmp_path):
    uri = tracking.default_uri(tmp_path)
    store = tracking.init_store(uri, "t", tmp_path / "artifacts")
    client = tracking.mlflow_client(uri)

    live = tracking.LiveRun(uri, "t", "math", "reverse_kl-opd", 0, flush_every=10)
    for step in range(24):
        live.log_step(step, {"loss": float(step), "note": "not a number"})
    (run_id,) = _active_runs(client, store)
    assert _history(client, run_id) == list(range(21))  # visible while training, in batches of 10 steps
    live.flush()
    assert _history(client, run_id) == list(range(24))

    resumed = tracking.LiveRun(uri, "t", "math", "reverse_kl-opd", 0, flush_every=10)
    for step in range(21, 31):  # a restart from the step-20 checkpoint
        resumed.log_step(step, {"loss": float(step)})
    resumed.flush()
    assert _active_runs(client, store) == [run_id]
    assert sorted(_history(client, run_id)) == list(range(31))  # steps 21-23 were not sent twice

    restarted = tracking.LiveRun(uri, "t", "math", "reverse_kl-opd", 0, flush_every=10)
    restarted.log_step(0, {"loss": 0.0})  # a fresh start replaces the run
    (new_id,) = _active_runs(client, store)
    assert new_id != run_id and _history(client, new_id) == [0]


def test_live_run_never_raises_on_a_broken_store(tmp_path):
    messages = []
    live = tracking.LiveRun(f"sqlite:///{tmp_path / 'missing' / 'x.db'}", "t", "math", "v", 0, log=messages.append)
    live.log_step(0, {"loss": 1.0})
    assert messages and "live MLflow logging failed" in messages[0]


def test_live_run_does_not_create_a_store(tmp_path):
    messages = []
    live = tracking.LiveRun(tracking.default_uri(tmp_path), "t", "math", "v", 0, log=messages.append)
    live.log_step(0, {"loss": 1.0})
    assert "no MLflow store" in messages[0] and not (tmp_path / "mlflow.db").exists()


def test_curves_from_a_metrics_file_are_the_curves_logged_live(tmp_path):
    """tracking.live false: the track rule logs every step from metrics.jsonl; the run ends with the
    curves live logging gives (the same steps and values of every numeric metric)."""
    import json

    uri = tracking.default_uri(tmp_path)
    store = tracking.init_store(uri, "t", tmp_path / "artifacts")
    client = tracking.mlflow_client(uri)
    rows = [{"step": 0, "val/greedy_acc": 0.25}] + [
        {"step": s, "loss": 1.0 / s, "grad_norm": float(s), "val/greedy_acc": 0.5, "kl/x": -s / 7, "note": "text"}
        for s in range(1, 61)]  # 60 steps: more than one of the track rule's 50-step requests
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    live = tracking.LiveRun(uri, "t", "math", "jsd-opd", 1)
    for r in rows:
        live.log_step(r["step"], {k: v for k, v in r.items() if k != "step"})
    live.flush()
    (live_id,) = [r.info.run_id for r in client.search_runs([store["experiment_id"]], "tags.seed = '1'")]
    after = tracking.track_entry(client, store, "t", {**_entry(tmp_path), "metrics_jsonl": metrics})

    def curves(run_id):
        return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k))
                for k in ("loss", "grad_norm", "val/greedy_acc", "kl/x")}
    assert curves(after) == curves(live_id) and len(curves(after)["loss"]) == 60
    assert len(curves(after)["val/greedy_acc"]) == 61 and "note" not in client.get_run(after).data.metrics


def _entry(tmp_path, avg=0.5):
    ev = tmp_path / f"eval{avg}.json"
    ev.write_text("{}")
    return {"task": "math", "variant": "jsd-opd", "seed": 0, "name": "math/jsd-opd/seed0",
            "eval_metrics": {"avg_at_k": avg, "greedy_acc": 0.25}, "tags": {"task": "math"},
            "params": {"opd": {"lr": 1e-4}}, "artifacts": [ev]}


def test_tracking_twice_holds_each_step_once_and_a_changed_result_replaces_the_run(tmp_path):
    uri = tracking.default_uri(tmp_path)
    store = tracking.init_store(uri, "t", tmp_path / "artifacts")
    client = tracking.mlflow_client(uri)
    first = tracking.track_entry(client, store, "t", _entry(tmp_path))
    again = tracking.track_entry(client, store, "t", _entry(tmp_path))
    assert again == first and len(client.get_metric_history(first, "eval/avg_at_k")) == 1
    changed = tracking.track_entry(client, store, "t", _entry(tmp_path, avg=0.75))
    assert changed != first and [m.value for m in client.get_metric_history(changed, "eval/avg_at_k")] == [0.75]
    assert _active_runs(client, store) == [changed]


def test_a_damaged_or_deleted_store_is_set_aside_and_rebuilt(tmp_path):
    uri = tracking.default_uri(tmp_path)
    tracking.init_store(uri, "t", tmp_path / "artifacts")
    db = tmp_path / "mlflow.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])  # a half-written file
    assert not tracking.store_is_sound(db)
    messages = []
    store = tracking.ensure_store(uri, "t", tmp_path / "artifacts", log=messages.append)
    assert "is damaged; moved to mlflow.db.corrupt.0" in messages[0] and (tmp_path / "mlflow.db.corrupt.0").exists()
    assert tracking.store_is_sound(db) and store["parent_run_id"]
    db.unlink()
    assert tracking.ensure_store(uri, "t", tmp_path / "artifacts")["parent_run_id"] and tracking.store_is_sound(db)
