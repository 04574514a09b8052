"""Throw at a study what users throw at it, and count what holds.

    python benchmarks/fault_injection.py [NAME]     # ~10 min on 2 cores; NAME: only the fault probes
                                                    # whose name contains it; scratch folders under /tmp

1. Input probes: malformed configs and config files. Each must be refused by validation with a
   ConfigError (naming key, value and what is allowed), never a traceback, never accepted.
2. Fault probes on a small study (smoke world, math, one variant, one seed, 20 OPD steps): kills,
   a killed forced re-run, damaged checkpoints, metrics, data and MLflow store, a moved study, an
   update that overflows. After each, the README's plain command (`snakemake --cores 2
   --rerun-incomplete`, after `--unlock` where a kill left a lock) must complete, and the run's final
   weights and evaluation must equal those of an undisturbed reference run (nothing lost).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from opdpipe.config import ConfigError, load  # noqa: E402
from opdpipe.layout import Layout  # noqa: E402

LAY = Layout.for_study("faults")
RUN = LAY.run_dir("math", "forward_kl-opd_plus", 0)


# ---------------------------------------------------------------- 1. input probes
def input_probes() -> list[tuple[str, object]]:
    def edit(fn):
        def make(c):
            fn(c)
            return c
        return make

    tasks = lambda c: c["tasks"]["math"]  # noqa: E731
    return [
        ("study '..'", edit(lambda c: c.update(study=".."))),
        ("study '.'", edit(lambda c: c.update(study="."))),
        ("study with a shell command", edit(lambda c: c.update(study="x; touch PWNED; echo"))),
        ("300-character study", edit(lambda c: c.update(study="s" * 300))),
        ("study with a slash", edit(lambda c: c.update(study="a/b"))),
        ("variant named '..'", edit(lambda c: c["variants"][0].update(name=".."))),
        ("variant name with a space", edit(lambda c: c["variants"][0].update(name="a b"))),
        ("divergence 'alpha: 0.5'", edit(lambda c: c["variants"].append({"divergence": "alpha: 0.5", "design": "opd"}))),
        ("alpha:0", edit(lambda c: c["variants"].append({"divergence": "alpha:0", "design": "opd"}))),
        ("alpha:1", edit(lambda c: c["variants"].append({"divergence": "alpha:1", "design": "opd"}))),
        ("alpha:1e-300", edit(lambda c: c["variants"].append({"divergence": "alpha:1e-300", "design": "opd"}))),
        ("alpha:6 at the default clip", edit(lambda c: c["variants"].append({"divergence": "alpha:6", "design": "opd"}))),
        ("log_u_clip 60 with pearson_chi2", edit(lambda c: c["opd"].update(log_u_clip=60.0) or
                                                   c["variants"].append({"divergence": "pearson_chi2", "design": "opd"}))),
        ("log_u_clip 100 with forward_kl", edit(lambda c: c["opd"].update(log_u_clip=100.0))),
        ("prompts_per_step 4.0", edit(lambda c: c["opd"].update(prompts_per_step=4.0))),
        ("group_size 2.0", edit(lambda c: c["opd"].update(group_size=2.0))),
        ("num_substeps not dividing the batch", edit(lambda c: c["opd"].update(num_substeps=3))),
        ("max_new_tokens above the positions", edit(lambda c: tasks(c).update(max_new_tokens=500))),
        ("duplicate seeds", edit(lambda c: c.update(seeds=[0, 0]))),
        ("unknown task knob", edit(lambda c: tasks(c)["knobs"].update(max_operands=9))),
        ("unknown divergence", edit(lambda c: c["variants"].append({"divergence": "kl", "design": "opd"}))),
        ("unknown design", edit(lambda c: c["variants"].append({"divergence": "jsd", "design": "ppo"}))),
        ("unknown top-level key", edit(lambda c: c.update(lerning_rate=1))),
        ("temperature 0.7", edit(lambda c: c["opd"].update(temperature=0.7))),
        ("negative lr", edit(lambda c: c["opd"].update(lr=-1.0))),
        ("seed as a string", edit(lambda c: c.update(seeds=["0"]))),
        ("zero test size", edit(lambda c: tasks(c)["sizes"].update(test=0))),
        ("unknown task", edit(lambda c: c["tasks"].update(chess=copy.deepcopy(c["tasks"]["math"])))),
        ("variant id 'teacher'", edit(lambda c: c["variants"][0].update(name="teacher"))),
        ("YAML syntax error", "study: x\ntasks: [\n"),
        ("binary file", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"),
        ("a list, not a mapping", "- a\n- b\n"),
        ("empty file", ""),
        ("a directory", None),
    ]


def run_input_probes(work: Path) -> tuple[int, int, list[str]]:
    base = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    clean, bad = 0, []
    probes = input_probes()
    for i, (name, probe) in enumerate(probes):
        path = work / f"probe{i}.yaml"
        if probe is None:
            path.mkdir()
        elif callable(probe):
            path.write_text(yaml.safe_dump(probe(copy.deepcopy(base))))
        else:
            path.write_bytes(probe if isinstance(probe, bytes) else probe.encode())
        try:
            load(path)
            bad.append(f"{name}: ACCEPTED")
        except ConfigError as err:
            clean += 1
            print(f"  refused  {name:<40} {str(err)[:110]}")
        except Exception as err:  # noqa: BLE001 - a traceback is what this probe counts
            bad.append(f"{name}: {type(err).__name__}: {err}")
    return clean, len(probes), bad


# ---------------------------------------------------------------- 2. fault probes
def study_config() -> dict:
    c = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    c["study"] = "faults"
    c["tasks"] = {"math": c["tasks"]["math"]}
    c["variants"] = [{"divergence": "forward_kl", "design": "opd_plus"}]
    c["seeds"] = [0]
    c["opd"].update(steps=20, checkpoint_every=2, eval_every=10, bias_every=10)
    return c


def smk(work: Path, *args: str, background: bool = False):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", "configs/faults.yaml", "--cores", "2", "--rerun-incomplete", *args]
    if background:
        return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800)


def fresh_study(base: Path, name: str, cfg: dict) -> Path:
    work = base / name
    (work / "configs").mkdir(parents=True)
    (work / "configs" / "faults.yaml").write_text(yaml.safe_dump(cfg))
    return work


def kill_when(work: Path, proc, ready) -> None:
    for _ in range(6000):
        if ready():
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    smk(work, "--unlock")


def checkpoints(work: Path) -> list[Path]:
    return sorted((work / RUN / "work" / "checkpoints").glob("step_*"))


def fingerprint(work: Path) -> dict:
    """What a run must give back: final weights and its evaluation."""
    weights = hashlib.sha256((work / RUN / "final" / "model.safetensors").read_bytes()).hexdigest()
    ev = json.loads((work / RUN / "eval.json").read_text())
    return {"weights": weights, "avg_at_k": ev["avg_at_k"], "greedy_acc": ev["greedy_acc"]}


def run_names(work: Path) -> list[str]:
    """The runs in the study's MLflow store itself (not the runs.json mirror of an earlier read)."""
    from opdpipe import tracking

    db = work / LAY.mlflow_db()
    if not db.exists() or not tracking.store_is_sound(db):
        return []
    return sorted(r["run_name"] for r in tracking.read_back(f"sqlite:///{db}", "faults"))


def fault_probes(base: Path, cfg: dict):
    """Each yields (name, work folder, a function that damages it, the recovery command's extra args)."""
    def kill_mid_training(work, extra=()):
        proc = smk(work, *extra, background=True)
        kill_when(work, proc, lambda: len(checkpoints(work)) >= 2)

    def truncated_checkpoint(work):
        kill_mid_training(work)
        weights = checkpoints(work)[-1] / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:64])

    def partial_metrics(work):
        kill_mid_training(work)
        with open(work / RUN / "work" / "metrics.jsonl", "a") as fh:
            fh.write('{"step": 99, "loss": 0.')

    def killed_forced_rerun(work):
        assert smk(work).returncode == 0
        kill_mid_training(work, extra=("--forcerun", f"{RUN}/summary.json"))

    def damaged_data(work):
        assert smk(work).returncode == 0
        train = work / LAY.data_file("math", "train")
        lines = train.read_text().splitlines()
        train.write_text("\n".join(lines[:3] + ['{"prompt": "cut off'] + lines[4:]) + "\n")
        shutil.rmtree(work / RUN / "final")  # and the run must be made again from it

    def half_written_store(work):
        assert smk(work).returncode == 0
        db = work / LAY.mlflow_db()
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])

    def deleted_store(work):
        assert smk(work).returncode == 0
        (work / LAY.mlflow_db()).unlink()

    def moved_study(work):
        assert smk(work).returncode == 0
        moved = work.with_name(work.name + "_moved")
        shutil.copytree(work, moved, symlinks=True)  # copy2 keeps the modification times
        shutil.rmtree(work)
        moved.rename(work)

    return [("SIGKILL of the study mid-training", kill_mid_training),
            ("truncated newest checkpoint", truncated_checkpoint),
            ("partial last line of the streamed metrics", partial_metrics),
            ("SIGKILL of a forced re-run (make variant)", killed_forced_rerun),
            ("malformed line in the training data", damaged_data),
            ("half-written mlflow.db", half_written_store),
            ("deleted mlflow.db", deleted_store),
            ("results folder moved (copied and renamed back)", moved_study)]


def main() -> None:
    only = sys.argv[1] if len(sys.argv) > 1 else ""  # e.g. "mlflow": only the probes whose name has it
    base = Path(tempfile.mkdtemp(prefix="opdpipe-faults-"))
    print(f"scratch folder: {base}\n1. input probes")
    clean, n_inputs, bad = run_input_probes(base)
    for b in bad:
        print(f"  NOT CLEAN {b}")
    cfg = study_config()
    ref = fresh_study(base, "reference", cfg)
    r = smk(ref)
    assert r.returncode == 0, r.stderr[-3000:]
    want, want_runs = fingerprint(ref), run_names(ref)
    print(f"\n2. fault probes (reference: {want})")
    survived, lost, results = 0, [], []
    for i, (name, damage) in enumerate(fault_probes(base, cfg)):
        if only not in name:
            continue
        work = fresh_study(base, f"fault{i}", cfg)
        damage(work)
        t0 = time.time()
        again = smk(work)
        dry = smk(work, "-n")
        ok = again.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
        got = fingerprint(work) if ok else {}
        names = run_names(work) if ok else []
        missing = [k for k in want if got.get(k) != want[k]] + (["mlflow runs"] if names != want_runs else [])
        jobs = [ln.split("rule ")[1].rstrip(":") for ln in (again.stdout + again.stderr).splitlines()
                if ln.startswith("rule ") or ln.startswith("localrule ")]
        survived += ok and not missing
        lost += [f"{name}: {m}" for m in missing] if ok else [f"{name}: recovery failed"]
        results.append((name, ok and not missing, time.time() - t0, jobs))
        print(f"  {'survived' if ok and not missing else 'FAILED  '} {name:<48} recovery {time.time() - t0:5.1f} s, "
              f"re-ran {len(jobs)} job(s): {', '.join(jobs) or '-'}")
    print("\n3. an update that overflows (lr 1e30): the job must fail naming the step, saving nothing")
    boom = copy.deepcopy(cfg)
    boom["opd"].update(lr=1e30, max_grad_norm=1e30)
    work = fresh_study(base, "overflow", boom)
    r = smk(work)
    log = (work / LAY.log("train", "math", "forward_kl-opd_plus", "seed0")).read_text()
    refused = r.returncode != 0 and "NonFiniteError: step" in log and not (work / RUN / "final").exists()
    print(f"  {'refused ' if refused else 'FAILED  '} {[ln for ln in log.splitlines() if 'NonFiniteError' in ln][-1:]}")
    print(f"\nSUMMARY: bad inputs refused cleanly {clean}/{n_inputs}; faults survived "
          f"{survived + refused}/{len(results) + 1}; lost: {lost or 'nothing'}")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
