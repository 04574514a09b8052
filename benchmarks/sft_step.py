"""Where the teacher stage and SFT-init spend their time: one SFT step (opdpipe.sft.train_sft's forward,
loss, backward, clipping and AdamW step) on the default study's batches, against the machine's limit.

    python benchmarks/sft_step.py [--who teacher|student] [--task math] [--steps 20] [--rounds 3]

The model is the default study's teacher (or student) block, random-init (the shapes set the cost,
not the weights); the batches are drawn as train_sft draws them from the task's reference solutions
(with the teacher's extra error copies), right-padded to the longest row. Three paths of the step's
loss (opdpipe.sft.loss), interleaved round by round in one process, one torch thread:
  transformers      model(input_ids, attention_mask).logits (its matmuls on MKL), as train_sft runs
                    models outside the fast path;
  fast, padded      opdpipe.fastlm.logits on every position of the padded batch, the head where a
                    learned token is predicted (fastlm.every_position(): the fast path before packing);
  fast path         as train_sft runs the embedded models: fastlm's layers on the rows' tokens alone
                    (padding left out), the head where a learned token is predicted, its larger
                    matmuls on oneDNN where opdpipe.onednn takes it (non-Intel CPUs with AVX-512).
Printed: ms per step (median over rounds), padded tokens per second, the step's FLOPs (forward +
backward = 3 x forward, every padded position and the head on each) and their share of MKL's
single-thread float32 matmul rate (512^3) measured here, and the largest logit difference between
transformers' forward and fastlm's.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import bench_world as bw
from opdpipe import data, fastlm, optim
from opdpipe.config import load
from opdpipe.data import load_split
from opdpipe.models import build_model
from opdpipe.sft import collate, encode_pairs, loss
from opdpipe.tasks import get_task
from opdpipe.teacher import training_pairs
from opdpipe.tokenizer import build_char_tokenizer

WHO = {"teacher": ("teacher", "train"), "student": ("student", "sft")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=bw.DEFAULT_CONFIG)
    p.add_argument("--who", default="teacher", help="teacher | student: whose model block and SFT settings")
    p.add_argument("--task", default="math")
    p.add_argument("--steps", type=int, default=20, help="timed steps per path and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.task not in load(args.config)["tasks"]:
        p.error(f"--task = {args.task!r}: allowed: {', '.join(load(args.config)['tasks'])}")
    if args.who not in WHO:
        p.error(f"--who = {args.who!r}: allowed: {', '.join(WHO)}")
    if args.steps < 1 or args.rounds < 1:
        p.error(f"--steps = {args.steps}, --rounds = {args.rounds}: allowed: both >= 1")
    return args


PATHS = {"transformers": fastlm.disabled, "fast, padded": fastlm.every_position, "fast path": contextlib.nullcontext}


def batches(cfg: dict, args, root: Path, tok) -> tuple[list, dict, dict]:
    """The step's batches (ids, attn, labels), its model block and its SFT settings."""
    block, key = WHO[args.who]
    settings = cfg[block][key]
    data.run(args.task, cfg["tasks"][args.task], cfg["seed"], root / "data")
    train = load_split(root / "data", "train", log=lambda *a: None)
    pairs = training_pairs(get_task(args.task), train, settings.get("error_frac", 0.0), cfg["seed"])
    encoded = encode_pairs(tok, pairs, 256)
    gen = torch.Generator().manual_seed(cfg["seed"])
    out = []
    for _ in range(args.steps):
        idx = torch.randint(len(encoded), (settings["batch_size"],), generator=gen).tolist()
        out.append(collate([encoded[i] for i in idx], tok.pad_token_id))
    return out, cfg[block]["model"], settings


def time_steps(model, path, steps: list, settings: dict) -> float:
    """Seconds per SFT step, as train_sft runs one, inside the path's block."""
    opt = optim.AdamW(model.parameters(), lr=settings["lr"], betas=(0.9, 0.98))
    with PATHS[path]():
        fast = fastlm.supports(model)
    t0 = time.perf_counter()
    for ids, attn, labels in steps:
        with PATHS[path]():
            step_loss = loss(model, ids, attn, labels, settings.get("label_smoothing", 0.0), fast)
        opt.zero_grad(set_to_none=True)
        step_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return (time.perf_counter() - t0) / len(steps)


def main(argv=None) -> int:
    args = parse_args(argv)
    bw.quiet()
    torch.set_num_threads(1)
    cfg, tok = load(args.config), build_char_tokenizer()
    peak = bw.matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        steps, block, settings = batches(cfg, args, Path(tmp), tok)
    model = build_model(block, tok, cfg["seed"])
    ids, attn, _ = steps[0]
    with torch.no_grad():
        diff = (model(input_ids=ids, attention_mask=attn).logits - fastlm.logits(model, ids, attn)).abs()
    tokens = statistics.mean(s[0].numel() for s in steps)
    width = statistics.mean(s[0].shape[1] for s in steps)
    flops = 3 * bw.forward_flops(block, len(tok), int(tokens), width / 2)
    times = {name: [] for name in PATHS}
    for _ in range(args.rounds):
        for name in PATHS:  # the same weights' cost: the update changes no shape
            times[name].append(time_steps(model, name, steps, settings))
    print(f"{args.who} SFT step ({args.task}): batch {settings['batch_size']}, mean padded width {width:.0f}, "
          f"{flops / 1e9:.2f} GFLOP/step; single-thread float32 matmul (512^3): {peak:.1f} GFLOP/s; "
          f"max |logit difference| {diff.max().item():.2e}")
    print("| path | ms/step | padded tokens/s | % of MKL's matmul rate |\n|---|---:|---:|---:|")
    for name, ts in times.items():
        s = statistics.median(ts)
        print(f"| {name} | {1e3 * s:.0f} | {tokens / s:.0f} | {100 * flops / s / 1e9 / peak:.0f} |")
    steps_cfg = settings["steps"]
    print(f"{steps_cfg} steps (the config's) at the median of each: "
          + ", ".join(f"{name} {steps_cfg * statistics.median(ts):.0f} s" for name, ts in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
