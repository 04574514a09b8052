"""The SFT-init student: a smaller model trained on a limited number of teacher completions.

This is the "SFT-init" row of the report and the starting point of every OPD run. It is
deliberately trained briefly so that distillation has headroom.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from opdpipe.data import read_jsonl
from opdpipe.backends import lora
from opdpipe.backends.chat import render_prompt
from opdpipe.backends.runtime import save_final
from opdpipe.backends.loading import is_pretrained, load_student, resolve_source
from opdpipe.models import build_model, num_params, save_checkpoint
from opdpipe.provenance import atomic_write_json, provenance
from opdpipe.sft import train_sft
from opdpipe.tokenizer import load_tokenizer


def run(task: str, cfg: dict, completions: str | Path, tokenizer_dir: str | Path, out_dir: str | Path,
        seed: int, threads: int = 1, log=print) -> dict:
    """cfg: the study's 'student' block: {'model': {...} | 'path' | 'hf_id', 'sft': {...}} (+ 'chat' when pretrained)."""
    torch.set_num_threads(threads)
    tok = load_tokenizer(tokenizer_dir)
    rows = read_jsonl(completions)[:cfg["sft"]["num_examples"]]
    if cfg["sft"].get("only_correct", False):
        rows = [r for r in rows if r["correct"]]
    if is_pretrained(cfg):  # the base checkpoint, float32 master weights; prompts through the chat template
        lora_sft = cfg["sft"].get("adapter", False)  # SFT through the student's LoRA, then merged
        model = load_student(resolve_source(cfg, "student"), cfg if lora_sft else
                             {k: v for k, v in cfg.items() if k != "adapter"})
        if lora_sft:
            torch.manual_seed(seed)  # the adapter's initialisation
            model = lora.attach_lora(model, lora.check_adapter(cfg["adapter"]))
        rows = [{**r, "prompt": render_prompt(tok, r["prompt"], cfg.get("chat"))} for r in rows]
    else:
        model = build_model(cfg["model"], tok, seed)
    t0 = time.perf_counter()
    s = cfg["sft"]
    stats = train_sft(model, tok, [(r["prompt"], r["completion"]) for r in rows], s["steps"], s["batch_size"],
                      s["lr"], seed, label_smoothing=s.get("label_smoothing", 0.0), log=log)
    (save_final if is_pretrained(cfg) else save_checkpoint)(model, tok, Path(out_dir) / "checkpoint")  # LoRA merged
    manifest = {"task": task, "num_params": num_params(model), "num_examples": len(rows), "train": stats,
                "wall_s": {"train": time.perf_counter() - t0}, **provenance({"task": task, "student": cfg}, seed)}
    atomic_write_json(Path(out_dir) / "manifest.json", manifest)
    return manifest
