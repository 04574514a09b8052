"""Model sources and loading: a local folder (`path:`) or a hub id at a pinned commit.

A hub id needs `revision:` set to a 40-hex commit: a branch such as `main` moves, and a study
that names one is not reproducible. Hub ids resolve with `huggingface_hub.snapshot_download`,
which reads the normal Hugging Face cache (or the block's `cache_dir`) and honours `HF_HUB_OFFLINE=1` (then only the cache).
Remote code runs only when the block says `trust_remote_code: true`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from opdpipe.backends.device import resolve_device, resolve_dtype

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SOURCE_KEYS = ("model", "path", "hf_id")


def check_source(block: dict, role: str) -> None:
    """Exactly one source; a hub id with a pinned commit. Raises ValueError naming key and value."""
    given = [k for k in SOURCE_KEYS if k in block]
    if len(given) != 1:
        raise ValueError(f"{role}: give exactly one of 'model' (built here), 'path' (a local folder) or "
                         f"'hf_id' (+ 'revision'); got {given or 'none'}")
    if "hf_id" in block:
        rev = block.get("revision")
        if not isinstance(rev, str) or not COMMIT.match(rev):
            raise ValueError(f"{role}.revision = {rev!r}: a hub model needs a pinned commit (40 hex digits, "
                             "e.g. from `huggingface-cli download <id>` or the model page's commit history); "
                             "branches such as 'main' move")
    elif "revision" in block:
        raise ValueError(f"{role}.revision = {block['revision']!r}: only a hub model ('hf_id') takes a revision")


def is_pretrained(block: dict) -> bool:
    return "path" in block or "hf_id" in block


def resolve_source(block: dict, role: str = "model") -> Path:
    """The local folder of a pretrained block (downloading into the HF cache if allowed)."""
    check_source(block, role)
    if "path" in block:
        folder = Path(block["path"])
    else:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(block["hf_id"], revision=block["revision"], cache_dir=block.get("cache_dir")))
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{role}: no model at {folder} (missing config.json)")
    return folder


def load_causal_lm(folder: str | Path, dtype: str = "float32", device: str = "cpu",
                   trust_remote_code: bool = False, where: str = "model") -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=resolve_dtype(dtype, where),
                                                 trust_remote_code=trust_remote_code)
    return model.to(resolve_device(device, where)).eval()


def load_teacher(folder: str | Path, block: dict) -> torch.nn.Module:
    """The frozen teacher: in its dtype, on its device, no gradients, eval mode."""
    model = load_causal_lm(folder, block.get("dtype", "float32"), block.get("device", "cpu"),
                           block.get("trust_remote_code", False), "teacher")
    model.requires_grad_(False)
    return model


def load_student(folder: str | Path, block: dict) -> torch.nn.Module:
    """The student on its device. Trained weights are float32 masters (bf16 is autocast, not storage);
    under a LoRA adapter the frozen base is held in the block's dtype (peft keeps the adapter float32)."""
    lora_on = (block.get("adapter") or {}).get("type", "none") == "lora"
    dtype = block.get("dtype", "float32") if lora_on else "float32"
    model = load_causal_lm(folder, dtype, block.get("device", "cpu"), block.get("trust_remote_code", False),
                           "student")
    if block.get("gradient_checkpointing", False):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model
