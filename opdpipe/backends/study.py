"""What a study config says about its models, checked before any job and handed to the stages.

A study is either embedded (teacher and student `model` blocks built here; nothing of this
package runs) or pretrained (both are `path` or `hf_id` + `revision` checkpoints, optionally
built first by the `mini_pair` stage).
"""
from __future__ import annotations

from pathlib import Path

from opdpipe.backends import lora
from opdpipe.backends.chat import check_chat
from opdpipe.backends.device import check_device
from opdpipe.backends.loading import check_source, is_pretrained
from opdpipe.layout import Layout

BACKEND_KEYS = ("device", "dtype", "trust_remote_code", "gradient_checkpointing", "adapter")


def mini_pair_dir(study: str, role: str) -> str:
    return Layout.for_study(study).hub_dir(role)


def is_pretrained_study(cfg: dict) -> bool:
    return is_pretrained(cfg["teacher"]) or is_pretrained(cfg["student"])


def check_study(cfg: dict) -> None:
    """Model sources, devices, adapter, chat and the mini pair's folders; ValueError on the first problem."""
    for role in ("teacher", "student"):
        check_source(cfg[role], role)
        check_device(cfg[role].get("device", "cpu"), role)
    if is_pretrained(cfg["teacher"]) != is_pretrained(cfg["student"]):
        raise ValueError("teacher / student: both must be pretrained checkpoints (path or hf_id) or both built "
                         "here (model); a built-here model has the character tokenizer, a checkpoint its own")
    lora.check_adapter(cfg["student"].get("adapter"))
    if cfg["student"]["sft"].get("adapter") and lora.check_adapter(cfg["student"].get("adapter")) is None:
        raise ValueError("student.sft.adapter = True: the student has no LoRA adapter (student.adapter) to train")
    if not is_pretrained_study(cfg):
        if cfg.get("rollout", {}).get("backend", "hf") != "hf":
            raise ValueError(f"rollout.backend = {cfg['rollout']['backend']!r}: applies to pretrained checkpoints only "
                             "(path or hf_id); the embedded world samples with its own loop; allowed here: hf")
        for role in ("teacher", "student"):
            extra = sorted(k for k in BACKEND_KEYS if k in cfg[role])
            if extra:
                raise ValueError(f"{role}: {extra} apply to pretrained checkpoints only (path or hf_id); the "
                                 "embedded world runs in float32 on the CPU")
        if cfg.get("chat", {}).get("template", "none") != "none":
            raise ValueError("chat.template = 'auto': the character tokenizer has no chat template; use 'none'")
        return
    chat = check_chat(cfg.get("chat"))
    check_rollout(cfg)
    if "mini_pair" in cfg:
        for role in ("teacher", "student"):
            want = mini_pair_dir(cfg["study"], role)
            if cfg[role].get("path") != want:
                raise ValueError(f"{role}.path = {cfg[role].get('path')!r}: with a mini_pair block it must be "
                                 f"{want!r} (where the mini_pair stage writes it)")
    else:
        _check_local_pair(cfg, chat)


def check_rollout(cfg: dict) -> None:
    """A vLLM rollout backend: the extra is installed somewhere a train job can run, and no HF-only key is set."""
    if cfg.get("rollout", {}).get("backend", "hf") != "vllm":
        return
    from opdpipe.backends import vllm_env

    vllm_env.require("rollout.backend")
    for where, block in [("opd", cfg.get("opd", {}))] + [(f"tasks.{t}.opd", s.get("opd", {}))
                                                         for t, s in cfg["tasks"].items()]:
        if block.get("rollout_batch_size"):
            raise ValueError(f"{where}.rollout_batch_size = {block['rollout_batch_size']!r}: sets the hf sampler's "
                             "batches; vLLM schedules its own; allowed with rollout.backend = 'vllm': 0")


def _check_local_pair(cfg: dict, chat: dict) -> None:
    """Where both checkpoints are local folders already, refuse a vocabulary mismatch now."""
    from opdpipe.backends.vocab import check_vocab_agreement, load_checkpoint_tokenizer

    folders = [Path(cfg[r]["path"]) for r in ("teacher", "student") if "path" in cfg[r]]
    if len(folders) == 2 and all((f / "config.json").exists() for f in folders):
        t, s = (load_checkpoint_tokenizer(f, cfg[r].get("trust_remote_code", False))
                for f, r in zip(folders, ("teacher", "student")))
        check_vocab_agreement(t, s, "teacher.path / student.path")
        if chat["template"] == "auto" and not s.chat_template:
            raise ValueError(f"chat.template = 'auto', but {folders[1]} has no chat template; allowed: none")
        adapter = lora.check_adapter(cfg["student"].get("adapter"))
        if adapter:
            lora.check_targets(_skeleton(folders[1], cfg["student"].get("trust_remote_code", False)), adapter)


def _skeleton(folder: Path, trust_remote_code: bool):
    """The model's module tree without its weights (meta device: free even at 8B)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder),
                                                trust_remote_code=trust_remote_code))


def backend_block(cfg: dict) -> dict:
    """The trainer's RunSpec.backend ({} for the embedded world, which keeps its own path)."""
    if not is_pretrained_study(cfg):
        return {}
    pick = lambda role: {k: cfg[role][k] for k in BACKEND_KEYS if k in cfg[role]}  # noqa: E731
    block = {"teacher": pick("teacher"), "student": pick("student"), "chat": check_chat(cfg.get("chat"))}
    if "rollout" in cfg:  # absent: hf, and the RunSpec stays as it was before there was a choice
        block["rollout"] = cfg["rollout"]
    return block
