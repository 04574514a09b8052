"""benchmarks/gpu_check.py on the CPU (--device cpu --tiny): the GPU check's code path runs, with only
torch, transformers, peft, tokenizers and safetensors imported (the script exits non-zero otherwise)."""
import json
import subprocess
import sys

from test_packaging import ROOT


def test_gpu_check_runs_on_the_cpu_with_its_own_dependencies_only():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                        "--steps", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert report["device"] == "cpu" and report["tokens_per_s"] > 0
    assert set(report["split_s"]) == {"rollout_s", "teacher_s", "update_s"}
    gaps = report["max_logprob_gap_vs_cpu_fp32"]
    assert 0 < gaps["student"] < 0.1 and 0 < gaps["teacher"] < 0.1  # bf16 autocast vs float32: small, not zero
