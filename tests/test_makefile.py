"""The Makefile never pastes a config value, nor a command-line value, into a shell command."""
import subprocess

import pytest
import yaml

from test_packaging import ROOT

STAMP = ".venv/.opdpipe-installed"  # -o: treat the environment as built, never rebuild it here


def _make(target: str, **variables) -> subprocess.CompletedProcess:
    args = ["make", "-s", "-C", str(ROOT), "-o", STAMP, target] + [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.fixture
def injected(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    marker = tmp_path / "PWNED"
    cfg["study"] = f"x; touch {marker}; echo"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, marker


@pytest.mark.parametrize("target, extra", [("mlflow-ui", {}),
                                           ("variant", {"TASK": "math", "VARIANT": "forward_kl-opd", "SEED": "0"})])
def test_a_study_name_is_never_run_as_a_command(injected, target, extra):
    path, marker = injected
    r = _make(target, CONFIG=path, **extra)
    assert r.returncode != 0 and "config error at study" in r.stderr, r.stderr[-2000:]
    assert not marker.exists()


@pytest.mark.parametrize("var", ["TASK", "VARIANT", "SEED"])
def test_make_variant_arguments_are_checked_and_never_run(tmp_path, var):
    marker = tmp_path / "PWNED"
    values = {"TASK": "math", "VARIANT": "forward_kl-opd", "SEED": "0"}
    values[var] = f"x; touch {marker}; echo"
    r = _make("variant", CONFIG=ROOT / "configs" / "smoke.yaml", **values)
    assert r.returncode != 0 and f"{var}=" in r.stderr and "allowed:" in r.stderr, r.stderr[-2000:]
    assert not marker.exists()


def test_an_unknown_installer_is_refused_before_anything_is_built(tmp_path):
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "setup", f"VENV={tmp_path / 'env'}", "SETUP_WITH=conda; touch x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SETUP_WITH must be uv or pip, got 'conda; touch x'" in r.stderr, r.stderr
    assert not (tmp_path / "env").exists() and not (ROOT / "x").exists()
