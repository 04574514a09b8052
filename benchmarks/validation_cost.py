"""What the best-by-validation checkpoint costs: seconds added to one training run and to lm-eval.

    python benchmarks/validation_cost.py [--config configs/default.yaml] [--tasks math tooluse]
                                         [--variant reverse_kl-opd] [--rounds 2]

Per task and round, one OPD run (seed 0, one thread) twice, interleaved: as the workflow runs it, and
without the validation avg@k sampling and the best checkpoint (greedy validation only, as before).
Both must end with the same weights. Then lm-eval scores the run's best/ checkpoint as the
evaluate job does (the cost added per seed whose best step is not the last one). Needs the study's
world under results/<study>/ (as benchmarks/train_step.py); writes only to a scratch folder.
"""
import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from opdpipe import evaluate, trainer, validation
from opdpipe.backends.study import backend_block
from opdpipe.config import load, opd_hparams, variants
from opdpipe.layout import Layout


def _weights_sha(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]


def train_once(cfg, lay, task, vid, out: Path, with_validation: bool) -> dict:
    v = variants(cfg)[vid]
    spec = trainer.RunSpec(task, v["divergence"], v["design"], 0, lay.checkpoint(task, "sft_init"),
                           lay.checkpoint(task, "teacher"), lay.data_dir(task), str(out),
                           {**opd_hparams(cfg, task, vid), "threads": 1}, backend_block(cfg))
    timed = {"sampling_s": 0.0, "calls": 0, "best_io_s": 0.0}

    def timing(real, key):
        def wrapped(*a, **k):
            t = time.perf_counter()
            r = real(*a, **k)
            timed[key] += time.perf_counter() - t
            timed["calls"] += key == "sampling_s"
            return r
        return wrapped

    patches = [mock.patch.object(validation, "sampled_accuracy", timing(validation.sampled_accuracy, "sampling_s")),
               mock.patch.object(validation.Best, "consider", timing(validation.Best.consider, "best_io_s")),
               mock.patch.object(validation, "finish", timing(validation.finish, "best_io_s"))] if with_validation else [
        mock.patch.object(validation, "sampled_accuracy", lambda *a, **k: 0.0),
        mock.patch.object(validation.Best, "consider", lambda *a, **k: False),
        mock.patch.object(validation, "finish", lambda *a, **k: {})]
    for p in patches:
        p.start()
    try:
        t0 = time.perf_counter()
        s = trainer.run(spec, progress=False, log=lambda *a: None)
        wall = time.perf_counter() - t0
    finally:
        for p in patches:
            p.stop()
    return {"wall_s": wall, "weights": _weights_sha(out / "final"), "best": s.get("best"), **timed}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--tasks", nargs="+", default=["math", "tooluse"])
    p.add_argument("--variant", default="reverse_kl-opd")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load(args.config)
    lay = Layout.for_study(cfg["study"])
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            rows = []
            for r in range(args.rounds):
                order = (True, False) if r % 2 == 0 else (False, True)  # interleaved, alternating order
                got = {w: train_once(cfg, lay, task, args.variant, Path(tmp) / f"{task}-{r}-{w}", w) for w in order}
                assert got[True]["weights"] == got[False]["weights"], "validation changed the training trajectory"
                rows.append(got)
            run_dir = Path(tmp) / f"{task}-0-True"
            e = cfg["eval"]
            t0 = time.perf_counter()
            evaluate.run(run_dir / "best", task, lay.data_file(task, "test"), Path(tmp) / f"{task}-eval_best.json",
                         k=e["k"], max_gen_toks=cfg["tasks"][task]["max_new_tokens"], batch_size=e["batch_size"],
                         limit=e.get("limit"), seed=0, threads=1)
            lm_eval_s = time.perf_counter() - t0
            added = [g[True]["wall_s"] - g[False]["wall_s"] for g in rows]
            report[task] = {"with_s": [g[True]["wall_s"] for g in rows], "without_s": [g[False]["wall_s"] for g in rows],
                            "added_s": added, "sampling_s": [g[True]["sampling_s"] for g in rows],
                            "best_io_s": [g[True]["best_io_s"] for g in rows],
                            "validations": rows[0][True]["calls"], "best": rows[0][True]["best"],
                            "same_weights": True, "lm_eval_best_s": lm_eval_s}
            print(f"{task} {args.variant} seed 0: run {statistics.fmean(report[task]['with_s']):.1f} s with, "
                  f"{statistics.fmean(report[task]['without_s']):.1f} s without validation avg@k + best/ "
                  f"(wall difference {', '.join(f'{a:+.1f}' for a in added)} s; timed inside the run: validation "
                  f"sampling {statistics.fmean(report[task]['sampling_s']):.2f} s in {report[task]['validations']} "
                  f"calls, best/ writes {statistics.fmean(report[task]['best_io_s']):.2f} s); "
                  f"same final weights; best step {report[task]['best']['step']}; lm-eval of best/ {lm_eval_s:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
