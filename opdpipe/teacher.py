"""Teacher caching: one teacher per task, shared by every variant.

Embedded default: a Llama-architecture model trained here by SFT on the reference solutions.
Paper scale: a Hugging Face model id at a pinned revision, resolved to a local snapshot.
Outputs: the checkpoint, a manifest, and teacher completions on training prompts (the data of
the student's SFT-init).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from opdpipe.data import load_split
from opdpipe.generation import greedy_accuracy
from opdpipe.backends.chat import encode_prompts
from opdpipe.backends.loading import is_pretrained, load_teacher, resolve_source
from opdpipe.models import build_model, num_params, save_checkpoint
from opdpipe.provenance import atomic_write_json, atomic_write_text, config_hash, provenance, read_json
from opdpipe.sft import train_sft
from opdpipe.tasks import get_task
from opdpipe.tasks.graders import scorer_for
from opdpipe.tokenizer import check_encodable, load_tokenizer


def load_splits(data_dir: str | Path) -> dict[str, list[dict]]:
    return {s: load_split(data_dir, s) for s in ("train", "validation", "test")}


def training_pairs(task, examples: list[dict], error_frac: float, seed: int) -> list:
    """Reference solutions, plus (for `error_frac` of them) a copy with one mistake that is not learned
    and a continuation consistent with it, so the teacher judges each token given the student's prefix
    instead of pulling every later token back to its own solution."""
    rng = random.Random(seed)
    pairs = [(e["prompt"], e["target"]) for e in examples]
    if error_frac > 0 and task.with_error is not None:
        for e in examples:
            if rng.random() < error_frac and (segments := task.with_error(e, rng)):
                pairs.append((e["prompt"], segments))
    return pairs


def run(task: str, cfg: dict, data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path,
        seed: int, threads: int = 1, log=print) -> dict:
    """cfg: {'teacher': {...}, 'num_completions': N (the SFT-init student's examples), 'max_new_tokens': T}."""
    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    data_manifest = read_json(Path(data_dir) / "manifest.json")
    key = {"cfg": cfg, "data": data_manifest["splits"], "seed": seed}
    if (out_dir / "manifest.json").exists() and read_json(out_dir / "manifest.json").get("config_hash") == config_hash(key):
        log(f"teacher for {task}: up to date, nothing to do")
        return read_json(out_dir / "manifest.json")
    T, tok, splits = get_task(task), load_tokenizer(tokenizer_dir), load_splits(data_dir)
    score = scorer_for(task, splits["train"] + splits["validation"])  # the records' grader, else the task's
    tcfg, t0 = cfg["teacher"], time.perf_counter()
    encode = None  # the embedded world tokenizes prompts as they are
    if is_pretrained(tcfg):  # a checkpoint: its own (byte-level) tokenizer, dtype, device, chat template
        model, train_stats = load_teacher(resolve_source(tcfg, "teacher"), tcfg), {}
        encode = lambda texts: encode_prompts(tok, texts, cfg.get("chat"))  # noqa: E731
    else:
        check_encodable(tok, [e["prompt"] + e["target"] for s in splits.values() for e in s], f"task {task}")
        model = build_model(tcfg["model"], tok, seed)
        tr = tcfg["train"]
        pairs = training_pairs(T, splits["train"], tr.get("error_frac", 0.0), seed)
        train_stats = train_sft(model, tok, pairs, tr["steps"], tr["batch_size"], tr["lr"], seed, log=log)
    t_train = time.perf_counter() - t0
    save_checkpoint(model, tok, out_dir / "checkpoint")
    val_acc, _ = greedy_accuracy(model, tok, splits["validation"], score, cfg["max_new_tokens"], encode=encode)
    log(f"teacher {task}: validation greedy accuracy {val_acc:.3f}")
    t1 = time.perf_counter()
    prompts = splits["train"][:cfg["num_completions"]]
    acc, outs = greedy_accuracy(model, tok, prompts, score, cfg["max_new_tokens"], encode=encode)
    atomic_write_text(out_dir / "completions.jsonl", "".join(
        json.dumps({"id": e["id"], "prompt": e["prompt"], "completion": o, "correct": score(o, e["answer"])},
                   sort_keys=True) + "\n" for e, o in zip(prompts, outs)))
    manifest = {"task": task, "num_params": num_params(model), "validation_greedy_acc": val_acc,
                "completions": {"count": len(outs), "accuracy": acc}, "train": train_stats,
                "wall_s": {"train": t_train, "completions": time.perf_counter() - t1},
                "data_sha256": data_manifest["splits"]["train"]["sha256"], **provenance(key, seed)}
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest
