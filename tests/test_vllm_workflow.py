"""`rollout.backend: vllm` through the DAG (the mini study at smoke size, one variant), and its
refusal where the extra is missing. The workflow runs in this interpreter; the train job runs in
the one that imports vllm (opdpipe.backends.vllm_env)."""
import json
import shutil

import pytest
import yaml

from opdpipe.backends import vllm_env
from opdpipe.config import ConfigError, load_yaml, validate
from test_packaging import ROOT
from test_workflow import _smk

MISSING = "vLLM extra absent (no interpreter here imports vllm): `make test-vllm` installs .venv-vllm and runs this"


def _vllm_config(variants=None) -> dict:
    cfg = load_yaml(ROOT / "configs" / "mini_smoke.yaml")
    cfg["rollout"] = {"backend": "vllm"}
    if variants:
        cfg["variants"] = variants
    return cfg


def test_missing_extra_is_refused_before_any_job(monkeypatch, tmp_path):
    monkeypatch.setattr(vllm_env, "here", lambda: False)
    monkeypatch.setenv(vllm_env.ENV_VAR, str(tmp_path / "no-such-python"))
    with pytest.raises(ConfigError, match=r"rollout.backend = 'vllm', but vLLM is not installed.*make vllm-env"):
        validate(_vllm_config())


def test_vllm_needs_pretrained_models_and_its_own_batches(monkeypatch):
    monkeypatch.setattr(vllm_env, "here", lambda: True)
    embedded = load_yaml(ROOT / "configs" / "smoke.yaml")
    embedded["rollout"] = {"backend": "vllm"}
    with pytest.raises(ConfigError, match="rollout.backend = 'vllm': applies to pretrained checkpoints only"):
        validate(embedded)
    cfg = _vllm_config()
    cfg["opd"]["rollout_batch_size"] = 4
    with pytest.raises(ConfigError, match=r"opd.rollout_batch_size = 4: .*allowed with rollout.backend = 'vllm': 0"):
        validate(cfg)
    cfg = _vllm_config()
    cfg["rollout"]["backend"] = "sglang"
    with pytest.raises(ConfigError, match="rollout.backend"):
        validate(cfg)


def test_absent_rollout_block_leaves_the_run_spec_as_it_was():
    from opdpipe.backends.study import backend_block

    assert "rollout" not in backend_block(validate(load_yaml(ROOT / "configs" / "mini_smoke.yaml")))
    assert "rollout" not in validate(load_yaml(ROOT / "configs" / "default.yaml"))


@pytest.mark.workflow
@pytest.mark.skipif(vllm_env.python_for_vllm() is None, reason=MISSING)
def test_mini_smoke_study_with_vllm_rollouts_completes(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    variants = [{"divergence": "reverse_kl", "design": "opd_plus"}]
    (tmp_path / "configs" / "vllm.yaml").write_text(yaml.safe_dump(_vllm_config(variants)))
    r = _smk(tmp_path, "--cores", "2", config="configs/vllm.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    root = tmp_path / "results" / "mini_smoke"
    run = root / "math" / "reverse_kl-opd_plus" / "seed0"
    s = json.loads((run / "summary.json").read_text())
    assert s["spec"]["backend"]["rollout"]["backend"] == "vllm" and s["steps"] == 2
    assert "| reverse_kl-opd_plus " in (root / "report" / "report.md").read_text()
    log = (root / "logs" / "train" / "math" / "reverse_kl-opd_plus" / "seed0.log").read_text()
    if not vllm_env.here():  # the job ran in the extra's own environment
        assert "rollout.backend = vllm: the job runs in" in log, log[-2000:]
