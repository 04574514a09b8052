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
    assert sorted(set(_history(client, run_id))) == list(range(31))

    restarted = tracking.LiveRun(uri, "t", "math", "reverse_kl-opd", 0, flush_every=10)
    restarted.log_step(0, {"loss": 0.0})  # a fresh start replaces the run
    (new_id,) = _active_runs(client, store)
    assert new_id != run_id and _history(client, new_id) == [0]


def test_live_run_never_raises_on_a_broken_store(tmp_path):
    messages = []
    live = tracking.LiveRun(f"sqlite:///{tmp_path / 'missing' / 'x.db'}", "t", "math", "v", 0, log=messages.append)
    live.log_step(0, {"loss": 1.0})
    assert messages and "live MLflow logging failed" in messages[0]
