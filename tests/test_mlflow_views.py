"""The study's MLflow views: review fields on every run, shared UI views, the links the report and
`make mlflow-ui` print, and the report on the parent run -- on a real sqlite store."""
import json

import pytest

from opdpipe import mlflow_views, tracking


def _entry(task, variant, seed, avg, metrics_jsonl=None):
    e = {"task": task, "variant": variant, "seed": seed, "name": f"{task}/{variant}" + ("" if seed is None else f"/seed{seed}"),
         "eval_metrics": {"avg_at_k": avg, "greedy_acc": avg / 2}, "tags": {"task": task, "variant": variant},
         "params": {"world": {"seed": 0}}, "artifacts": []}
    if seed is not None:
        e["tags"].update({"seed": seed, "kind": "run", "divergence": variant.split("-")[0], "design": variant.split("-")[1]})
        e["metrics_jsonl"] = metrics_jsonl
    else:
        e["tags"]["kind"] = "reference"
    return e


@pytest.fixture
def study(tmp_path):
    curve = tmp_path / "metrics.jsonl"
    curve.write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 0, "val/greedy_acc": 0.1}, {"step": 1, "loss": 1.0, "bias/cos_expected": 0.5, "bias/cos_sampled": 0.1},
        {"step": 2, "loss": 0.9, "bias/cos_expected": 0.7, "bias/cos_sampled": 0.3}]))
    entries = [_entry("math", "sft_init", None, 0.20), _entry("math", "teacher", None, 0.90),
               _entry("math", "forward_kl-opd", 0, 0.10, curve), _entry("math", "forward_kl-opd", 1, 0.25, curve),
               _entry("math", "forward_kl-opd_plus", 0, 0.30, curve), _entry("math", "forward_kl-opd_plus", 1, 0.40, curve)]
    return tmp_path, tracking.add_review_fields(entries)


def test_review_fields_flag_collapse_against_sft_init_and_summarise_the_bias_meter(study):
    _, entries = study
    flags = {(e["variant"], e.get("seed")): e["tags"]["collapsed"] for e in entries}
    assert flags == {("sft_init", None): "false", ("teacher", None): "false", ("forward_kl-opd", 0): "true",
                     ("forward_kl-opd", 1): "true", ("forward_kl-opd_plus", 0): "false", ("forward_kl-opd_plus", 1): "false"}
    run = entries[2]
    assert run["params"]["task"] == "math" and run["params"]["variant"] == "forward_kl-opd" and run["params"]["seed"] == 0
    assert "seed" not in entries[0]["params"]  # a reference row has no seed, no divergence, its own design
    assert (entries[0]["tags"]["divergence"], entries[0]["tags"]["design"]) == ("none", "sft_init")
    assert run["summary_metrics"] == pytest.approx({"bias_summary/cos_expected_mean": 0.6, "bias_summary/cos_sampled_mean": 0.2})
    assert tracking.is_collapsed(0.1, 0.2) and not tracking.is_collapsed(0.2, 0.2)


def test_views_are_published_as_experiment_tags_and_links(study):
    tmp, entries = study
    uri = tracking.default_uri(tmp)
    store = tracking.init_store(uri, "t", tmp / "artifacts")
    client = tracking.mlflow_client(uri)
    for e in entries:
        tracking.track_entry(client, store, "t", e)
    rows = tracking.read_back(uri, "t")
    links = mlflow_views.publish(client, store["experiment_id"], ["math"], rows)
    tags = client.get_experiment(store["experiment_id"]).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    grouped = json.loads(tags["mlflow.sharedViewState.opdpipe-by_variant"])
    assert grouped["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "task"}, {"mode": "tag", "groupByData": "variant"}]
    assert "tags.`variant`" in grouped["selectedColumns"] and "metrics.`eval/avg_at_k`" in grouped["selectedColumns"]
    curves = json.loads(tags["mlflow.sharedViewState.opdpipe-curves-math"])
    assert [c["metricKey"] for c in curves["compareRunCharts"]] == mlflow_views.CURVES
    assert curves["searchFilter"] == "tags.task = 'math' AND tags.kind = 'run'"
    assert links["curves/math"] in tags["mlflow.note.content"] and links["compare/math"] in tags["mlflow.note.content"]
    assert links["compare/math"] not in mlflow_views.note(links, ["math"], limit=600)  # too long: curves only
    assert links["curves/math"].endswith("viewStateShareKey=opdpipe-curves-math&compareRunsMode=CHART&workflowType=machine_learning")
    seeds = [r["run_id"] for r in rows if r["seed"] not in (None, "None")]
    assert len(seeds) == 4 and all(i in links["compare/math"] for i in seeds)
    by_name = {r["run_name"]: r for r in rows}
    assert by_name["math/forward_kl-opd/seed0"]["collapsed"] == "true"
    metrics = client.get_run(by_name["math/forward_kl-opd/seed0"]["run_id"]).data.metrics
    assert metrics["bias_summary/cos_expected_mean"] == pytest.approx(0.6) and metrics["eval/avg_at_k"] == 0.10

    runs_json = tmp / "runs.json"
    runs_json.write_text(json.dumps({"experiment": "opdpipe-t", "experiment_id": store["experiment_id"],
                                     "tasks": ["math"], "links": links, "runs": rows}))
    cell = mlflow_views.row_links(json.loads(runs_json.read_text()), "forward_kl-opd", base="http://h:1")
    assert cell.count("http://h:1/#/experiments/") == 3 and "[s0]" in cell and "[s1]" in cell and "[compare](" in cell
    printed = mlflow_views.describe(runs_json, base="http://h:1")
    for key in ("experiment", "runs", "by_variant", "curves/math", "compare/math"):
        assert f"http://h:1/{links[key]}" in printed, key

    report = tmp / "report"
    (report / "figures").mkdir(parents=True)
    (report / "report.md").write_text("# r")
    (report / "figures" / "curves.png").write_bytes(b"png")
    assert tracking.log_report(client, store, report) == ["report/figures", "report/report.md"]
    assert tracking.log_report(client, store, report) == ["report/figures", "report/report.md"]  # a re-run replaces


def test_an_unknown_view_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown 'grid'; valid: runs, by_variant, curves"):
        mlflow_views.view_state("grid")
