"""The trainer's view of the backends: load the pair, run the student, save its checkpoints.

`backend` is the RunSpec's block (empty for the embedded default, which keeps its own path):

    {"teacher": {device, dtype, trust_remote_code},
     "student": {device, dtype, trust_remote_code, gradient_checkpointing, adapter},
     "chat": {template, kwargs}, "rollout": {backend: hf | vllm, gpu_memory_utilization, cpu_kv_cache_gb}}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from opdpipe.backends import lora
from opdpipe.backends.chat import check_chat, encode_prompts
from opdpipe.backends.device import autocast, resolve_device, resolve_dtype
from opdpipe.backends.loading import load_student, load_teacher
from opdpipe.backends.rollout import get_engine
from opdpipe.backends.vocab import check_vocab_agreement, load_checkpoint_tokenizer
from opdpipe.provenance import atomic_dir

@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype  # the student's compute dtype (autocast); master weights stay float32
    chat: dict
    engine: object
    adapter: dict | None = None

    def autocast(self):
        return autocast(self.device, self.dtype)

    def encode(self, tok, texts: list[str]) -> list[list[int]]:
        return encode_prompts(tok, texts, self.chat)


def build_runtime(backend: dict, rollout_batch_size: int = 0, student_dir: str | Path | None = None,
                  seed: int = 0) -> Runtime:
    s = backend.get("student", {})
    device = resolve_device(s.get("device", "cpu"), "student")
    dtype = resolve_dtype(s.get("dtype", "float32"), "student")
    return Runtime(device, dtype, check_chat(backend.get("chat")),
                   _engine(backend.get("rollout") or {}, rollout_batch_size, student_dir, dtype, seed),
                   lora.check_adapter(s.get("adapter")))


def _engine(block: dict, rollout_batch_size: int, student_dir, dtype: torch.dtype, seed: int):
    """The rollout engine of `rollout.backend`; one holding its own weights starts from `student_dir`."""
    name = block.get("backend", "hf")
    if name == "hf":
        return get_engine(name, rollout_batch_size)
    options = {k: v for k, v in block.items() if k != "backend"}
    return get_engine(name, rollout_batch_size, model_dir=student_dir, dtype=dtype, seed=seed, **options)


def load_pair(student_dir: str | Path, teacher_dir: str | Path, backend: dict, student=None,
              rollout_batch_size: int = 0, seed: int = 0):
    """(student, teacher, tokenizer, runtime); `student`: one resumed by load_resumed_student, else fresh."""
    rt = build_runtime(backend, rollout_batch_size, student_dir, seed)
    s_block = backend.get("student", {})
    tok = load_checkpoint_tokenizer(student_dir, s_block.get("trust_remote_code", False))
    t_tok = load_checkpoint_tokenizer(teacher_dir, backend.get("teacher", {}).get("trust_remote_code", False))
    check_vocab_agreement(t_tok, tok)
    teacher = load_teacher(teacher_dir, backend.get("teacher", {}))
    if student is None:
        student = load_student(student_dir, s_block)
        if rt.adapter is not None:
            student = lora.attach_lora(student, rt.adapter)
    return student, teacher, tok, rt


def load_resumed_student(student_dir: str | Path, ckpt: Path, backend: dict):
    """The student of a resumable checkpoint (opdpipe.checkpoints.save wrote `save_pretrained` there:
    a LoRA student's adapter only, over the unchanged base in `student_dir`)."""
    s_block = backend.get("student", {})
    if lora.check_adapter(s_block.get("adapter")) is None:
        return load_student(ckpt, s_block)
    return lora.load_adapter(load_student(student_dir, s_block), ckpt)


def save_final(student, tok, path: Path) -> None:
    """The checkpoint lm-eval reads: plain transformers weights (a LoRA adapter merged in)."""
    model = lora.merged(student) if hasattr(student, "peft_config") else student
    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
