"""Study configs with pretrained models: every bad input refused before any job, naming key and value."""
import copy

import pytest
import torch
import yaml

from opdpipe.config import ConfigError, validate
from test_packaging import ROOT

HEX = "0123456789abcdef0123456789abcdef01234567"


def _mini(mini_world):
    cfg = yaml.safe_load((ROOT / "configs" / "mini_smoke.yaml").read_text())
    del cfg["mini_pair"]  # the pair exists already: point at it
    cfg["teacher"]["path"], cfg["student"]["path"] = str(mini_world / "teacher"), str(mini_world / "student")
    return cfg


def test_the_mini_configs_and_the_paper_config_validate():
    for name in ("mini", "mini_smoke", "paper"):
        validate(yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()))


def test_a_local_pair_validates(mini_world):
    validate(_mini(mini_world))


def _refused(cfg, match):
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


def test_unpinned_hub_models_are_refused(mini_world):
    cfg = _mini(mini_world)
    del cfg["teacher"]["path"]
    cfg["teacher"]["hf_id"] = "Qwen/Qwen3-8B"
    _refused(cfg, "teacher.revision = None: a hub model needs a pinned commit")
    cfg["teacher"]["revision"] = "main"
    _refused(cfg, "teacher.revision: 'main' does not match")
    cfg["teacher"]["revision"] = HEX
    validate(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused(mini_world):
    cfg = _mini(mini_world)
    cfg["student"]["device"] = "cuda"
    _refused(cfg, "student.device = 'cuda', but .* sees no CUDA device")


def test_unknown_lora_targets_are_refused_before_any_job(mini_world):
    cfg = _mini(mini_world)
    cfg["student"]["adapter"]["target_modules"] = ["q_proj", "c_attn"]
    _refused(cfg, r"student.adapter.target_modules: \['c_attn'\] are not Linear layers .* allowed: all-linear")


def test_a_vocabulary_mismatch_names_the_first_differing_token(mini_world, tiny_world):
    cfg = _mini(mini_world)
    cfg["teacher"]["path"] = str(tiny_world / "teacher")  # the character tokenizer
    _refused(cfg, r"differ at id 0: teacher '<pad>', student '<\|endoftext\|>'")


def test_backend_keys_and_chat_need_pretrained_models():
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    bad = copy.deepcopy(cfg)
    bad["student"]["dtype"] = "bfloat16"
    _refused(bad, r"student: \['dtype'\] apply to pretrained checkpoints only")
    bad = copy.deepcopy(cfg)
    bad["chat"] = {"template": "auto"}
    _refused(bad, "chat.template = 'auto': the character tokenizer has no chat template")
    bad = copy.deepcopy(cfg)
    bad["teacher"] = {"path": "somewhere"}
    _refused(bad, "both must be pretrained checkpoints")


def test_mini_pair_folders_must_be_the_ones_it_writes():
    cfg = yaml.safe_load((ROOT / "configs" / "mini_smoke.yaml").read_text())
    cfg["teacher"]["path"] = "elsewhere/teacher"
    _refused(cfg, "teacher.path = 'elsewhere/teacher': with a mini_pair block it must be "
                  "'results/mini_smoke/hub/teacher'")
