"""The whole smoke DAG end to end (train, evaluate, track, report), then what a re-run schedules.

Runs `snakemake` as a user would, in a scratch directory, with configs/smoke.yaml (minutes).
"""
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_packaging import ROOT

pytestmark = pytest.mark.workflow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def _smk(workdir: Path, *args: str, config: str = "configs/smoke.yaml") -> subprocess.CompletedProcess:
    return subprocess.run(SNAKEMAKE + ["--directory", str(workdir), "--configfile", config, *args],
                          cwd=workdir, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("smoke")
    shutil.copytree(ROOT / "configs", work / "configs")
    r = _smk(work, "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    return work


def test_smoke_dag_produces_the_report(smoke):
    rep = smoke / "results" / "smoke" / "report"
    md = (rep / "report.md").read_text()
    for row in ("teacher", "sft_init", "forward_kl-opd", "forward_kl-opd_plus", "reverse_kl-opd_plus"):
        assert f"| {row} " in md, row
    assert "Runs read back from MLflow" in md and "Advantage formulas" in md
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6
    runs = json.loads((rep.parent / "tracking" / "runs.json").read_text())
    for r in runs["runs"]:  # every row of the main table links to its MLflow run(s) and its task's comparison
        assert f"(http://127.0.0.1:5000/{runs['links']['run/' + r['run_name']]})" in md
        assert f"<a href='http://127.0.0.1:5000/{runs['links']['run/' + r['run_name']]}'>" in html
    assert md.count(runs["links"]["curves/math"]) == 5  # one per row: teacher, SFT-init, three variants
    for fig in ("curves", "sampled", "grad_norm", "log_ratio", "length", "bias"):
        assert (rep / "figures" / f"{fig}.png").stat().st_size > 1000


def test_every_run_is_tracked_once_in_mlflow(smoke):
    runs = json.loads((smoke / "results" / "smoke" / "tracking" / "runs.json").read_text())["runs"]
    names = [r["run_name"] for r in runs]
    assert len(names) == len(set(names)) == 2 * 2 + 2 * 3 * 2  # references + task x variant x seed
    assert all(r["status"] == "FINISHED" and r["avg_at_k"] is not None for r in runs)
    db = sqlite3.connect(smoke / "results" / "smoke" / "mlflow.db")
    steps = db.execute("select count(distinct step) from metrics where key = 'loss'").fetchone()[0]
    assert steps == 4  # the curves made it into the store
    study = db.execute("select status, lifecycle_stage from runs where name = 'smoke'").fetchall()
    assert study == [("FINISHED", "active")]  # the study's parent run is closed once all rows are in
    tags = dict(db.execute("select key, value from experiment_tags").fetchall())
    assert tags["mlflow.experimentKind"] == "custom_model_development" and "mlflow.sharedViewState.opdpipe-by_variant" in tags
    per_run = db.execute("select count(*) from tags where key = 'collapsed'").fetchone()[0]
    bias = db.execute("select count(distinct run_uuid) from latest_metrics where key = 'bias_summary/cos_expected_mean'").fetchone()[0]
    assert (per_run, bias) == (len(runs), 2 * 3 * 2)  # every row flagged; every trained run has its bias summary
    logged = json.loads((smoke / "results" / "smoke" / "tracking" / "report_artifacts.json").read_text())["artifacts"]
    assert logged == ["report/figures", "report/report.html", "report/report.md"]  # the report on the parent run


def test_a_seed_evaluated_alone_matches_its_variant_job(smoke, tmp_path):
    """One lm-eval job evaluates a variant's seeds in turn; the second seed's numbers must not depend
    on the evaluation before it in the same process."""
    from opdpipe import evaluate
    from opdpipe.config import load

    cfg = load(smoke / "configs" / "smoke.yaml")
    res = smoke / "results" / "smoke"
    run = res / "math" / "reverse_kl-opd_plus" / "seed1"
    job = json.loads((run / "eval.json").read_text())
    alone = evaluate.run(run / "final", "math", res / "data" / "math" / "test.jsonl", tmp_path / "eval.json",
                         k=cfg["eval"]["k"], max_gen_toks=cfg["tasks"]["math"]["max_new_tokens"],
                         batch_size=cfg["eval"]["batch_size"], limit=cfg["eval"]["limit"], seed=1)
    assert job["label"] == "reverse_kl-opd_plus/seed1" and job["seed"] == 1
    assert [s["samples"] for s in alone["samples"]] == [s["samples"] for s in job["samples"]]
    assert (alone["avg_at_k"], alone["greedy_acc"]) == (job["avg_at_k"], job["greedy_acc"])


def test_complete_study_schedules_nothing_and_one_edit_reruns_one_variant(smoke):
    r = _smk(smoke, "-n", "--cores", "2")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]
    cfg = yaml.safe_load((smoke / "configs" / "smoke.yaml").read_text())
    cfg["variants"][1]["opd"] = {"lr": 5e-4}  # forward_kl-opd_plus only
    (smoke / "configs" / "edited.yaml").write_text(yaml.safe_dump(cfg))
    r = _smk(smoke, "-n", "--cores", "2", "--quiet", "rules", config="configs/edited.yaml")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts == {"train": 4, "evaluate_variant": 2, "track": 1, "report": 1, "track_report": 1, "all": 1,
                      "total": 10}, out


def test_malformed_config_starts_no_job(smoke):
    cfg = yaml.safe_load((smoke / "configs" / "smoke.yaml").read_text())
    cfg["variants"][0]["divergence"] = "kl"
    (smoke / "configs" / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = _smk(smoke, "--cores", "1", config="configs/bad.yaml")
    assert r.returncode != 0 and "variants.0.divergence: unknown 'kl'" in r.stderr


def test_workflow_lint_is_clean():
    r = subprocess.run(SNAKEMAKE + ["--lint", "--configfile", str(ROOT / "configs" / "smoke.yaml")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
