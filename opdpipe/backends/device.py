"""Device and precision: `device: auto | cpu | cuda`, `dtype: float32 | bfloat16`.

The teacher is held in its dtype. The student keeps float32 master weights always; `dtype:
bfloat16` runs its forward passes under bf16 autocast (the optimizer still steps float32).
"""
from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_device(name: str, where: str) -> None:
    """Refuse an unknown device, or cuda where this machine has none (before any job)."""
    if name not in DEVICES:
        raise ValueError(f"{where}.device = {name!r}; allowed: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{where}.device = 'cuda', but torch {torch.__version__} sees no CUDA device on this "
                         "machine; allowed here: cpu, auto")


def resolve_device(name: str, where: str = "model") -> torch.device:
    check_device(name, where)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, where: str = "model") -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{where}.dtype = {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast for the student's passes; a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
