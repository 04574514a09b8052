"""The pinned requirement lists agree with each other."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    return {ln.strip().lstrip("- ").strip() for ln in lines
            if "==" in ln and not ln.strip().startswith("#")}


def test_requirements_and_environment_yml_pin_the_same_versions():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    for name in ("environment.yml", "workflow/envs/opdpipe.yaml"):
        env = _pins((ROOT / name).read_text().splitlines())
        assert req and req == env, f"only in requirements.txt: {req - env}; only in {name}: {env - req}"


def test_torch_is_pinned():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert "torch==2.13.0" in req
