"""The smoke study on a real SLURM cluster (`make test-cluster`, after `cluster/local_slurm.sh start`).

Runs `snakemake --profile profiles/slurm` with configs/smoke.yaml: every job must be one sbatch job
that sacct lists as COMPLETED, and every result (weights, metrics, lm-eval numbers) must equal the
local `--cores` run of the same config (the one `make test` leaves in $OPDPIPE_SMOKE_DIR, or a
fresh one). A 2-rank training run (torchrun inside one job) is submitted too. The self-distillation
group is left out here (its jobs are the same rules with other inputs; `make test` runs them): it
would add 14 sbatch jobs to CI's time and show nothing new about SLURM.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from test_packaging import ROOT
from test_workflow import _smk

pytestmark = pytest.mark.cluster
PROFILE = str(ROOT / "profiles" / "slurm")
DDP = {"divergence": "reverse_kl", "design": "opd_plus", "name": "reverse_kl-opd_plus-ddp2", "opd": {"world_size": 2}}
DDP_SUMMARY = "results/smoke/math/reverse_kl-opd_plus-ddp2/seed0/summary.json"


def _planned_jobs(work: Path, *args: str) -> dict:
    out = _smk(work, "-n", "--quiet", "rules", *args)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    return {ln.split()[0]: int(ln.split()[1]) for ln in text.splitlines()
            if len(ln.split()) == 2 and ln.split()[1].isdigit()}


def _submitted(proc: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"submitted with SLURM jobid (\d+)", proc.stdout + proc.stderr)


def _sacct(ids: list[str]) -> list[dict]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,Comment,State,AllocCPUS,Elapsed"],
                         capture_output=True, text=True, check=True).stdout
    keys = ("id", "comment", "state", "cpus", "elapsed")
    return [dict(zip(keys, ln.split("|"))) for ln in out.splitlines() if ln]


def _ddp_config(work: Path) -> str:
    cfg = yaml.safe_load((work / "configs" / "smoke.yaml").read_text())
    cfg["variants"].append(DDP)
    (work / "configs" / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    return "configs/ddp.yaml"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    kept = Path(os.environ.get("OPDPIPE_SMOKE_DIR", "/nonexistent"))
    if (kept / "results" / "smoke" / "report" / "report.html").exists():
        return kept  # what `make test` just produced
    work = tmp_path_factory.mktemp("local")
    shutil.copytree(ROOT / "configs", work / "configs")
    r = _smk(work, "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    return work


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    assert ping.returncode == 0, "no SLURM controller: run `cluster/local_slurm.sh start` first"
    work = tmp_path_factory.mktemp("slurm")
    shutil.copytree(ROOT / "configs", work / "configs")
    cfg = yaml.safe_load((work / "configs" / "smoke.yaml").read_text())
    cfg.pop("self_distillation")  # the same study without the self-distillation group (see the docstring)
    (work / "configs" / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    planned = _planned_jobs(work, "--cores", "2")
    r = _smk(work, "--profile", PROFILE)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    (work / "snakemake.out").write_text(r.stdout + r.stderr)
    return work, planned, _submitted(r)


def test_every_job_is_one_sbatch_job_that_sacct_lists(slurm_run):
    work, planned, ids = slurm_run
    jobs = planned["total"] - planned["all"]  # `all` only gathers the targets: no job
    rows = _sacct(ids)
    print("\n".join(f"{r['id']:>6} {r['state']:<10} {r['cpus']} cpu {r['elapsed']} {r['comment']}" for r in rows))
    assert len(ids) == len(set(ids)) == jobs == len(rows)
    assert all(r["state"] == "COMPLETED" for r in rows), rows
    per_rule = {}
    for r in rows:  # the executor's comment: rule_<name>[_wildcards_<values>]
        rule = re.match(r"rule_(.+?)(_wildcards_|$)", r["comment"]).group(1)
        per_rule[rule] = per_rule.get(rule, 0) + 1
    assert per_rule == {k: v for k, v in planned.items() if k not in ("all", "total")}
    assert len({r["comment"] for r in rows}) == jobs  # one sbatch job per job, none twice


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs(a: Path, rel: str, name: str) -> list[Path]:
    """The workflow's own outputs called `name` (not MLflow's copies under mlartifacts/)."""
    return sorted(p for p in (a / rel).rglob(name) if "mlartifacts" not in p.parts)


def _same_results(a: Path, b: Path, rel: str) -> int:
    """Compare one study folder's results in two work dirs; return how many files were compared."""
    n = 0
    for ev in _outputs(a, rel, "eval.json"):
        mine, theirs = json.loads(ev.read_text()), json.loads((b / ev.relative_to(a)).read_text())
        for k in ("greedy_acc", "avg_at_k", "pass_at_k", "avg_at_k_stderr"):
            assert mine[k] == theirs[k], (ev, k)
        assert [s["samples"] for s in mine["samples"]] == [s["samples"] for s in theirs["samples"]], ev
        n += 1
    for sm in _outputs(a, rel, "summary.json"):
        mine, theirs = json.loads(sm.read_text()), json.loads((b / sm.relative_to(a)).read_text())
        untimed = [{k: v for k, v in s["final"].items() if not k.startswith(("time/", "tokens_per_s"))}
                   for s in (mine, theirs)]
        assert untimed[0] == untimed[1] and mine["val_greedy_acc"] == theirs["val_greedy_acc"], sm
        n += 1
    for w in _outputs(a, rel, "model.safetensors"):
        assert _sha(w) == _sha(b / w.relative_to(a)), w
        n += 1
    return n


def test_results_equal_the_local_run(slurm_run, local_run):
    work = slurm_run[0]
    compared = _same_results(work, local_run, "results/smoke")
    # eval.json (4 references + 12 runs), summaries, model weights (4 references + 12 runs' final/ and best/)
    assert compared == 16 + 12 + 28


def test_a_two_rank_training_job_runs_torchrun_inside_one_sbatch_job(slurm_run, local_run):
    work = slurm_run[0]
    r = _smk(work, "--profile", PROFILE, DDP_SUMMARY, config=_ddp_config(work))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    ids = _submitted(r)
    rows = _sacct(ids)
    assert len(ids) == 1 and rows[0]["state"] == "COMPLETED" and rows[0]["cpus"] == "2", rows
    summary = json.loads((work / DDP_SUMMARY).read_text())
    assert summary["config"]["world_size"] == 2 and summary["steps"] == 4
    if (local_run / DDP_SUMMARY).exists():  # `make test` trained the same 2-rank run locally
        assert _same_results(work, local_run, str(Path(DDP_SUMMARY).parent)) == 3  # summary, final/ and best/ weights


def test_the_paper_config_asks_for_gpus_on_the_gpu_rules(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    r = _smk(tmp_path, "--profile", PROFILE, "-n", config="configs/paper.yaml")
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-3000:]
    gpus = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m, res = re.match(r"(?:local)?rule (\w+):", block), re.search(r"resources: .*?gpu=(\d+)", block)
        if m and res:
            gpus.setdefault(m.group(1), set()).add(int(res.group(1)))
    gpu_rules = {rule for rule, g in gpus.items() if g != {0}}
    assert gpu_rules == {"teacher", "sft_init", "train"} | {rule for rule in gpus if rule.startswith("evaluate")}
    assert all(gpus[rule] == {1} for rule in gpu_rules), gpus  # one GPU per job (README: Sizing)
    assert {"prepare_data", "tokenizer", "tracking_store", "track", "report"} <= set(gpus) - gpu_rules
