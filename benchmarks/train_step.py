"""Time one default OPD run (one variant, one seed, one thread) and its per-step split.

    python benchmarks/train_step.py [--config configs/default.yaml] [--task math] [--variant reverse_kl-opd]

Needs the study's world (data, teacher, SFT-init) under results/<study>/, as `make reproduce`
(or `snakemake --cores all results/<study>/<task>/sft_init/manifest.json`) makes it. Writes the
run to a scratch folder, never over the study's results.
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from opdpipe import trainer
from opdpipe.backends.study import backend_block
from opdpipe.config import load, opd_hparams, variants
from opdpipe.layout import Layout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--task", default="math")
    p.add_argument("--variant", default="reverse_kl-opd")
    args = p.parse_args()
    cfg = load(args.config)
    lay = Layout.for_study(cfg["study"])
    v = variants(cfg)[args.variant]
    hp = {**opd_hparams(cfg, args.task, args.variant), "threads": 1}
    with tempfile.TemporaryDirectory() as out:
        spec = trainer.RunSpec(args.task, v["divergence"], v["design"], 0, lay.checkpoint(args.task, "sft_init"),
                               lay.checkpoint(args.task, "teacher"), lay.data_dir(args.task), out, hp,
                               backend_block(cfg))
        t0 = time.perf_counter()
        s = trainer.run(spec, progress=False, log=lambda *a: None)
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()][1:]
    split = {k: sum(r[k] for r in rows) for k in ("time/rollout_s", "time/teacher_s", "time/update_s")}
    step_total = sum(split.values())
    print(f"run: {args.task} {args.variant} seed 0, {len(rows)} steps, torch threads {torch.get_num_threads()}")
    print(f"wall time (incl. loading, validation, bias meter, checkpoints): {wall:.1f} s")
    for k, v in split.items():
        print(f"  {k[5:-2]:<8} {v:7.1f} s  ({100 * v / step_total:4.1f}% of step time)")
    print(f"  per step {1000 * step_total / len(rows):.0f} ms; tokens/s median {statistics.median(r['tokens_per_s'] for r in rows):.0f}")
    print(f"final val greedy acc {s['final'].get('val/greedy_acc')}")


if __name__ == "__main__":
    main()
