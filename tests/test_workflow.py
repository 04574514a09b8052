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
    counts = _rule_counts(out)
    assert counts == {"train": 4, "evaluate_variant": 2, "track": 1, "report": 1, "all": 1, "total": 9}, out


def _rule_counts(out: str) -> dict:
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


def test_a_student_edit_does_not_retrain_the_teacher(smoke):
    cfg = yaml.safe_load((smoke / "configs" / "smoke.yaml").read_text())
    cfg["student"]["sft"]["lr"] = 1e-3
    (smoke / "configs" / "student.yaml").write_text(yaml.safe_dump(cfg))
    r = _smk(smoke, "-n", "--cores", "2", "--quiet", "rules", config="configs/student.yaml")
    counts = _rule_counts(r.stdout + r.stderr)
    assert r.returncode == 0 and counts["sft_init"] == 2 and "teacher" not in counts, r.stdout[-2000:]


def test_outputs_deleted_by_a_killed_forced_rerun_are_made_again(smoke, tmp_path):
    """`make variant` deletes a run's outputs before training it; killed then, the plain command must
    make them again, though the report downstream still exists."""
    work = tmp_path / "killed"
    shutil.copytree(smoke, work, symlinks=True)
    run = work / "results" / "smoke" / "math" / "forward_kl-opd" / "seed0"
    shutil.rmtree(run / "final")
    (run / "summary.json").unlink()
    (run / "metrics.jsonl").unlink()
    r = _smk(work, "-n", "--cores", "2", "--quiet", "rules")
    counts = _rule_counts(r.stdout + r.stderr)
    assert counts.get("train") == 1 and counts.get("report") == 1, (r.stdout + r.stderr)[-2000:]


def test_a_moved_study_reruns_nothing(smoke, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(smoke, moved, symlinks=True)  # copy2: modification times kept, as `cp -a` or `mv`
    r = _smk(moved, "-n", "--cores", "2")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


def test_the_report_rule_declares_every_figure_it_writes(smoke):
    from opdpipe.layout import FIGURES

    r = _smk(smoke, "-n", "--cores", "2", "--forcerun", "report")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and all(f"report/figures/{name}.png" in out for name in FIGURES), out[-3000:]
    assert all((smoke / "results" / "smoke" / "report" / "figures" / f"{n}.png").exists() for n in FIGURES)


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
