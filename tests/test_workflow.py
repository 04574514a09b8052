"""The whole smoke DAG end to end (train, evaluate, track, report), then what a re-run schedules.

Runs `snakemake` as a user would, in a scratch directory, with configs/smoke.yaml (minutes).
"""
import hashlib
import json
import os
import re
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


def _smk(workdir: Path, *args: str, config: str = "configs/smoke.yaml", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(SNAKEMAKE + ["--directory", str(workdir), "--configfile", config, *args],
                          cwd=workdir, capture_output=True, text=True, timeout=1800, env=env)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    # OPDPIPE_SMOKE_DIR keeps the run for `make test-cluster` to compare against (make test empties it first)
    kept = os.environ.get("OPDPIPE_SMOKE_DIR")
    work = Path(kept) if kept else tmp_path_factory.mktemp("smoke")
    shutil.copytree(ROOT / "configs", work / "configs", dirs_exist_ok=True)
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
    from opdpipe.layout import FIGURES

    assert html.count("data:image/png;base64,") == len(FIGURES) == 7
    runs = json.loads((rep.parent / "tracking" / "runs.json").read_text())
    for r in runs["runs"]:  # every row of the main table links to its MLflow run(s) and its task's comparison
        assert f"(http://127.0.0.1:5000/{runs['links']['run/' + r['run_name']]})" in md
        assert f"<a href='http://127.0.0.1:5000/{runs['links']['run/' + r['run_name']]}'>" in html
    assert md.count(runs["links"]["curves/math"]) == 5  # one per row: teacher, SFT-init, three variants
    assert md.count(runs["links"]["curves/opsd"]) == 5  # the self-distillation group's too
    assert "self-distillation (math) avg@k" in md and "## Self-teacher with and without the privileged" in md
    assert "| opsd (math) | gap (headroom)" in md
    for fig in FIGURES:
        assert (rep / "figures" / f"{fig}.png").stat().st_size > 1000


def test_best_and_final_checkpoints_are_both_evaluated_and_reported(smoke):
    """Every run has best/ (chosen by validation avg@k in training) and lm-eval files for both final/ and
    best/; the main table is the best checkpoints', the final table the final ones'."""
    from opdpipe.report import _fmt, mean_ci

    res = smoke / "results" / "smoke"
    md = (res / "report" / "report.md").read_text()
    main, final = md.split("## Main results: best checkpoint by validation")[1].split("## Final checkpoints")
    for variant in ("forward_kl-opd", "forward_kl-opd_plus", "reverse_kl-opd_plus"):
        best_avg, final_avg, steps = [], [], []
        for seed in (0, 1):
            run = res / "math" / variant / f"seed{seed}"
            summary = json.loads((run / "summary.json").read_text())
            ev, ev_best = (json.loads((run / f).read_text()) for f in ("eval.json", "eval_best.json"))
            assert (run / "best" / "config.json").exists() and ev_best["best"] == summary["best"]
            assert summary["best"]["step"] in (2, 4) and summary["best"]["metric"] == "val/avg_at_k"
            if summary["best"]["is_final"]:  # same weights: final's evaluation reused, and said so
                assert ev_best["reused_from"].endswith(f"seed{seed}/eval.json") and "reused" in ev_best["note"]
            else:
                assert ev_best["checkpoint"].endswith(f"seed{seed}/best") and "reused_from" not in ev_best
            best_avg.append(ev_best["avg_at_k"]), final_avg.append(ev["avg_at_k"]), steps.append(summary["best"]["step"])
        row = next(line for line in main.splitlines() if line.startswith(f"| {variant} "))
        assert _fmt(*mean_ci(best_avg)) in row and f"| {steps[0]}, {steps[1]} " in row, row
        row = next(line for line in final.splitlines() if line.startswith(f"| {variant} "))
        assert _fmt(*mean_ci(final_avg)) in row, row



def test_the_dag_has_no_teacher_job_for_the_self_distillation_group(smoke):
    """Every teacher job writes its log and benchmark: only the two tasks have one; the group's runs are
    taught by its SFT-init, and its SFT-init learns from its own examples (a share with the hint)."""
    res = smoke / "results" / "smoke"
    assert sorted(p.name for p in (res / "benchmarks" / "teacher").iterdir()) == ["math.tsv", "tooluse.tsv"]
    assert sorted(p.name for p in (res / "logs" / "teacher").iterdir()) == ["math.log", "tooluse.log"]
    assert not (res / "opsd" / "teacher" / "checkpoint").exists()
    sft = json.loads((res / "opsd" / "sft_init" / "manifest.json").read_text())
    examples = [json.loads(x) for x in (res / "data" / "opsd" / "sft.jsonl").read_text().splitlines()]
    assert sft["num_examples"] == len(examples) and sum(e["hint"] for e in examples) == len(examples) // 2


def test_the_self_teacher_is_the_groups_sft_init_given_the_reference_solution(smoke):
    res = smoke / "results" / "smoke"
    hint, plain = (json.loads((res / "opsd" / r / "eval.json").read_text()) for r in ("teacher", "sft_init"))
    assert hint["checkpoint"] == plain["checkpoint"] == "results/smoke/opsd/sft_init/checkpoint"
    assert all(s["prompt"].startswith("Reference solution: ") for s in hint["samples"])
    assert not any("Reference solution" in s["prompt"] for s in plain["samples"])
    summary = json.loads((res / "opsd" / "reverse_kl-opd_plus" / "seed0" / "summary.json").read_text())
    assert summary["spec"]["teacher"] == summary["spec"]["student"] == "results/smoke/opsd/sft_init/checkpoint"
    assert summary["steps"] == 2 and summary["task"] == "math"  # graded as math; the group's own opd block


def test_every_run_is_tracked_once_in_mlflow(smoke):
    runs = json.loads((smoke / "results" / "smoke" / "tracking" / "runs.json").read_text())["runs"]
    names = [r["run_name"] for r in runs]
    assert len(names) == len(set(names)) == 3 * 2 + 3 * 3 * 2  # references + (task or group) x variant x seed
    assert {r["task"] for r in runs} == {"math", "tooluse", "opsd"}
    assert all(r["status"] == "FINISHED" and r["avg_at_k"] is not None for r in runs)
    db = sqlite3.connect(smoke / "results" / "smoke" / "mlflow.db")
    steps = db.execute("select count(distinct step) from metrics where key = 'loss'").fetchone()[0]
    assert steps == 4  # the curves made it into the store (the group's runs take 2 steps)
    study = db.execute("select status, lifecycle_stage from runs where name = 'smoke'").fetchall()
    assert study == [("FINISHED", "active")]  # the study's parent run is closed once all rows are in
    tags = dict(db.execute("select key, value from experiment_tags").fetchall())
    assert tags["mlflow.experimentKind"] == "custom_model_development" and "mlflow.sharedViewState.opdpipe-by_variant" in tags
    per_run = db.execute("select count(*) from tags where key = 'collapsed'").fetchone()[0]
    bias = db.execute("select count(distinct run_uuid) from latest_metrics where key = 'bias_summary/cos_expected_mean'").fetchone()[0]
    assert (per_run, bias) == (len(runs), 3 * 3 * 2)  # every row flagged; every trained run has its bias summary
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
    counts = _rule_counts(out)
    assert counts == {"train": 6, "evaluate_variant": 3, "track": 1, "report": 1, "track_report": 1, "all": 1,
                      "total": 13}, out


def _rule_counts(out: str) -> dict:
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


def test_a_student_edit_does_not_retrain_the_teacher(smoke):
    cfg = yaml.safe_load((smoke / "configs" / "smoke.yaml").read_text())
    cfg["student"]["sft"]["lr"] = 1e-3
    (smoke / "configs" / "student.yaml").write_text(yaml.safe_dump(cfg))
    r = _smk(smoke, "-n", "--cores", "2", "--quiet", "rules", config="configs/student.yaml")
    counts = _rule_counts(r.stdout + r.stderr)
    assert r.returncode == 0 and counts["sft_init"] == 3 and "teacher" not in counts, r.stdout[-2000:]


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


def test_a_damaged_store_is_set_aside_and_rebuilt_without_retraining(smoke, tmp_path):
    work = tmp_path / "damaged"
    shutil.copytree(smoke, work, symlinks=True)
    db = work / "results" / "smoke" / "mlflow.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])  # a write cut short
    r = _smk(work, "-n", "--cores", "2", "--quiet", "rules")
    counts = _rule_counts(r.stdout + r.stderr)
    assert "mlflow.db is damaged; moved to mlflow.db.corrupt.0" in r.stderr, r.stderr[-2000:]
    assert counts.get("tracking_store") == 1 and counts.get("track") == 1 and "train" not in counts, counts


def test_a_deleted_store_is_made_again_and_rebuilt_without_retraining(smoke, tmp_path):
    work = tmp_path / "deleted"
    shutil.copytree(smoke, work, symlinks=True)
    (work / "results" / "smoke" / "mlflow.db").unlink()
    r = _smk(work, "-n", "--cores", "2", "--quiet", "rules")
    counts = _rule_counts(r.stdout + r.stderr)
    assert counts.get("tracking_store") == 1 and counts.get("track") == 1 and "train" not in counts, counts


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


def test_a_math_benchmark_joins_the_study_without_rerunning_it(smoke, tmp_path):
    """Adding AIME24 (a fixture in its hub columns) schedules its data, its lm-eval jobs, the MLflow mirror
    (the config it logs changed) and the report, nothing upstream; the report gains its table."""
    work = tmp_path / "bench"
    shutil.copytree(smoke, work, symlinks=True)
    cfg = yaml.safe_load((work / "configs" / "smoke.yaml").read_text())
    cfg["tasks"]["math"]["benchmarks"] = {"aime24": {"path": str(ROOT / "tests" / "fixtures" / "aime24_sample.jsonl")}}
    (work / "configs" / "bench.yaml").write_text(yaml.safe_dump(cfg))
    r = _smk(work, "-n", "--cores", "2", "--quiet", "rules", config="configs/bench.yaml")
    out = r.stdout + r.stderr
    counts = _rule_counts(out)
    assert counts == {"prepare_benchmark": 1, "evaluate_benchmark_variant": 3, "evaluate_benchmark_reference": 2,
                      "track": 1, "report": 1, "track_report": 1, "all": 1, "total": 10}, out
    r = _smk(work, "--cores", "2", config="configs/bench.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    res = work / "results" / "smoke"
    ev = json.loads((res / "math" / "forward_kl-opd" / "seed1" / "bench" / "aime24" / "eval.json").read_text())
    assert ev["n_samples"] == 3 and ev["lm_eval_tasks"] == ["opd_aime24_greedy", "opd_aime24_avg2"]
    md = (res / "report" / "report.md").read_text()
    assert "## Math benchmarks" in md and "aime24 avg@2" in md and "| reverse_kl-opd_plus " in md


def test_a_two_rank_training_run_completes_in_the_dag(smoke):
    """opd.world_size = 2: the train job launches torchrun with 2 gloo ranks; rank 0 writes the outputs."""
    cfg = yaml.safe_load((smoke / "configs" / "smoke.yaml").read_text())
    cfg["variants"].append({"divergence": "reverse_kl", "design": "opd_plus", "name": "reverse_kl-opd_plus-ddp2",
                            "opd": {"world_size": 2}})
    (smoke / "configs" / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    run = Path("results/smoke/math/reverse_kl-opd_plus-ddp2/seed0")
    r = _smk(smoke, "--cores", "2", str(run / "summary.json"), config="configs/ddp.yaml")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    summary = json.loads((smoke / run / "summary.json").read_text())
    assert summary["config"]["world_size"] == 2 and summary["steps"] == 4
    assert [m["step"] for m in map(json.loads, (smoke / run / "metrics.jsonl").read_text().splitlines())] == \
        [0, 1, 2, 3, 4]  # rank 0 alone wrote each step once
    log = (smoke / "results/smoke/logs/train/math/reverse_kl-opd_plus-ddp2/seed0.log").read_text()
    assert "--nproc_per_node 2" in log and not (smoke / run / "work").exists()


def test_jobs_run_in_the_resident_worker_and_match_a_job_in_its_own_process(smoke, tmp_path):
    """A local run forks its jobs from the resident worker (opdpipe.worker); a train job forced again in
    its own process (OPDPIPE_RESIDENT_WORKER=0) writes the same weights, byte for byte."""
    log = (smoke / ".snakemake" / "log" / "opdpipe-worker.log").read_text()
    forked = dict(re.findall(r"job (\d+): tmp[^.\s]+\.(\w+)\.py in ", log))
    res = smoke / "results" / "smoke"
    runs = sorted(p.parent for p in res.glob("*/*/seed*/summary.json"))
    assert list(forked.values()).count("train") >= len(runs) > 0
    assert {"teacher", "sft_init", "evaluate", "track", "report"} <= set(forked.values())
    assert all(f"job {pid}: exit 0 after" in log for pid in forked)
    work = tmp_path / "own"
    shutil.copytree(smoke, work, symlinks=True)
    run = Path("results/smoke/math/forward_kl-opd/seed1")
    r = _smk(work, "--cores", "1", "-f", str(run / "final"), env={**os.environ, "OPDPIPE_RESIDENT_WORKER": "0"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert (work / ".snakemake" / "log" / "opdpipe-worker.log").read_text() == log  # no worker this time
    for ckpt in ("final", "best"):
        again, before = ((d / run / ckpt / "model.safetensors").read_bytes() for d in (work, smoke))
        assert hashlib.sha256(again).digest() == hashlib.sha256(before).digest(), ckpt


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
