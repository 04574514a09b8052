"""Time default OPD runs (one variant, one seed, one thread) and their per-step split, on the fast path
(opdpipe.fastlm), on the fast path over every padded response position (fastlm.every_position: the
teacher's and the update's passes before they left the padding out), on the fast path with its
matmuls on MKL (opdpipe.onednn disabled) and on the reference transformers path, interleaved in one
process.

    python benchmarks/train_step.py [--config configs/default.yaml] [--task math] [--variant reverse_kl-opd]
                                    [--steps N] [--rounds R] [--paths fast,fast-padded,fast-mkl,reference]

The paths' float rounding differs, so over a whole run their trajectories part (other responses,
other lengths); a few steps (--steps 10) compare them on nearly the same batches.

Needs the study's world (data, teacher, SFT-init) under results/<study>/, as `make reproduce`
(or `snakemake results/<study>/<task>/sft_init/manifest.json --cores all`) makes it. Writes the
runs to scratch folders, never over the study's results. Each round runs every path once, in turn,
so both see the same machine load; the table gives medians over rounds. CPU seconds (this
process) are printed beside wall seconds: on a shared machine they move less.
"""
import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from opdpipe import fastlm, onednn, trainer
from opdpipe.backends.study import backend_block
from opdpipe.config import load, opd_hparams, variants
from opdpipe.layout import Layout

PARTS = ("rollout", "teacher", "update")
PATHS = {"fast": contextlib.nullcontext, "fast-padded": fastlm.every_position, "fast-mkl": onednn.disabled,
         "reference": fastlm.disabled}


def one_run(cfg, lay, task, variant, steps, path) -> dict:
    v = variants(cfg)[variant]
    hp = {**opd_hparams(cfg, task, variant), "threads": 1}
    if steps:
        hp.update(steps=steps, eval_every=max(steps, 1), bias_every=0, checkpoint_every=0)
    with tempfile.TemporaryDirectory() as out, PATHS[path]():
        spec = trainer.RunSpec(task, v["divergence"], v["design"], 0, lay.checkpoint(task, "sft_init"),
                               lay.checkpoint(task, "teacher"), lay.data_dir(task), out, hp, backend_block(cfg))
        t0, c0 = time.perf_counter(), time.process_time()
        s = trainer.run(spec, progress=False, log=lambda *a: None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()][1:]
    split = {k: sum(r[f"time/{k}_s"] for r in rows) / len(rows) for k in PARTS}
    return {"wall": wall, "cpu": cpu, "steps": len(rows), **split,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
            "val": s["final"].get("val/greedy_acc")}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--task", default="math")
    p.add_argument("--variant", default="reverse_kl-opd")
    p.add_argument("--steps", type=int, default=0, help="0: the config's steps (with its validation and checkpoints)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--paths", default="fast,fast-mkl,reference")
    args = p.parse_args()
    paths = args.paths.split(",")
    unknown = set(paths) - set(PATHS)
    if unknown:
        p.error(f"--paths: unknown {sorted(unknown)}; allowed: {', '.join(PATHS)}")
    cfg = load(args.config)
    lay = Layout.for_study(cfg["study"])
    torch.set_num_threads(1)
    res = {k: [] for k in paths}
    for _ in range(args.rounds):
        for path in paths:
            res[path].append(one_run(cfg, lay, args.task, args.variant, args.steps, path))
    med = {k: {m: statistics.median(r[m] for r in rs) for m in rs[0] if m != "val"} for k, rs in res.items()}
    print(f"run: {args.task} {args.variant} seed 0, {med[paths[0]]['steps']:.0f} steps, 1 torch thread, "
          f"{args.rounds} round(s), medians")
    print(f"{'path':<10} {'wall s':>7} {'cpu s':>7} {'ms/step':>8} " + " ".join(f"{k + ' ms':>11}" for k in PARTS)
          + f" {'tokens/s':>9}")
    for path, m in med.items():
        step = sum(m[k] for k in PARTS)
        print(f"{path:<10} {m['wall']:7.1f} {m['cpu']:7.1f} {1000 * step:8.0f} "
              + " ".join(f"{1000 * m[k]:6.0f} ({100 * m[k] / step:2.0f}%)" for k in PARTS) + f" {m['tokens_per_s']:9.0f}")
    a = med[paths[0]]
    for other in paths[1:]:
        b = med[other]
        print(f"{other} / {paths[0]}: wall {b['wall'] / a['wall']:.2f}x, per step "
              f"{sum(b[k] for k in PARTS) / sum(a[k] for k in PARTS):.2f}x")
    print("final val greedy acc: " + ", ".join(f"{k} {rs[-1]['val']}" for k, rs in res.items()))


if __name__ == "__main__":
    main()
