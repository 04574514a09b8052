"""How one opdpipe OPD step's cost grows: seconds per step and tokens per second as the batch, the
response budget and the student's size grow, one factor at a time, the others at the embedded default.

    python benchmarks/scaling.py                       # all three axes, ~2-4 min on one thread
    python benchmarks/scaling.py --axes batch --batch 16,32 --rounds 1 --warmup 0   # fewer points

The default point: 16 prompts x 4 rollouts, 32 new tokens, the default student (hidden 64, 2 layers)
and teacher (hidden 96, 3 layers) of configs/default.yaml, one torch thread, the study's OPD
hyperparameters. The axes:
  batch   prompts per step 16 -> 32 -> 64 -> 128 (x 4 rollouts each)
  budget  max_new_tokens 32 -> 64 -> 128 -> 256
  size    student x1, x4, x16 parameters: hidden, intermediate size and attention heads times 1, 2, 4
          (head size and depth kept; non-embedding parameters grow exactly 4x and 16x); teacher unchanged
Checkpoints are random-init (built here with opdpipe.models.build_model, saved with save_pretrained),
so a rollout ends only on a chance EOS (about 1 token in 99): the decode loop runs to the budget
(64+ rollouts never all stop early), so every point computes rollouts x budget response positions;
tokens/s counts the response tokens actually sampled (EOS included), printed beside the positions.
GFLOP/step counts every row's own prompt positions (bench_world.step_flops); opdpipe's fast path
computes each distinct prompt once, so it does less arithmetic than counted.
Each point is a fresh run of opdpipe.trainer.train_step; an axis's points are stepped round-robin
(`--warmup` untimed rounds, then the median of `--rounds`), so a shared machine's load falls on all
of them alike.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import bench_world as bw

AXES = {"batch": ("prompts_per_step", "prompts"), "budget": ("max_new_tokens", "new tokens"),
        "size": ("student_x", "student params x")}
DEFAULTS = {"batch": "16,32,64,128", "budget": "32,64,128,256", "size": "1,4,16"}
WIDTH = {1: 1, 4: 2, 16: 4}  # parameter factor -> width factor
MAX_POSITIONS = 512  # RoPE has no position parameters: room for the 256-token budget changes no weight


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=bw.DEFAULT_CONFIG)
    p.add_argument("--axes", default="batch,budget,size", help="comma-separated subset of " + ", ".join(AXES))
    for axis, values in DEFAULTS.items():
        p.add_argument(f"--{axis}", default=values, help=f"comma-separated values (default {values})")
    p.add_argument("--rounds", type=int, default=5, help="timed steps per point (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per point")
    p.add_argument("--workdir", default=None, help="keep the checkpoints and data here (default: a temp dir)")
    args = p.parse_args(argv)
    args.axes = [a for a in args.axes.split(",") if a]
    bad = [a for a in args.axes if a not in AXES]
    if bad:
        p.error(f"--axes: unknown {bad}; allowed: {', '.join(AXES)}")
    for axis in AXES:
        try:
            vals = [int(x) for x in getattr(args, axis).split(",") if x]
        except ValueError:
            p.error(f"--{axis} = {getattr(args, axis)!r}: allowed: comma-separated positive integers")
        if not vals or min(vals) < 1:
            p.error(f"--{axis} = {getattr(args, axis)!r}: allowed: comma-separated positive integers")
        if axis == "size" and set(vals) - set(WIDTH):
            p.error(f"--size = {args.size!r}: allowed factors: {', '.join(map(str, WIDTH))}")
        setattr(args, axis, vals)
    if args.rounds < 1 or args.warmup < 0:
        p.error(f"--rounds = {args.rounds}, --warmup = {args.warmup}: allowed: rounds >= 1, warmup >= 0")
    return args


def point_step(root: Path, study: dict, prompts: int, budget: int, size: int) -> bw.OpdStep:
    """A fresh OPD run at one point: its checkpoints (built once per size) and its trainer state."""
    student = bw.scaled(study["student"], WIDTH[size], MAX_POSITIONS)
    teacher = bw.scaled(study["teacher"], 1, MAX_POSITIONS)
    world = {"data": bw.make_data(root, study["data"], study["seed"]),
             "student": bw.make_checkpoint(root, f"student_x{size}", student, study["seed"]),
             "teacher": bw.make_checkpoint(root, "teacher", teacher, study["seed"])}
    hp = {**study["hparams"], "prompts_per_step": prompts, "max_new_tokens": budget}
    step = bw.OpdStep(world, hp, "reverse_kl", "opd", root / f"run_{prompts}_{budget}_{size}")
    step.blocks = (student, teacher)
    return step


def measure_axis(steps: dict, rounds: int, warmup: int) -> dict:
    """The points of one axis stepped round-robin (the machine's load falls on all of them alike);
    per point the median seconds per step, tokens per second and FLOPs."""
    runs = {key: [] for key in steps}
    for r in range(warmup + rounds):
        for key, step in steps.items():
            out = step()
            if r >= warmup:
                runs[key].append(out)
    return {key: summary(steps[key], rs) for key, rs in runs.items()}


def summary(step: bw.OpdStep, runs: list[dict]) -> dict:
    s = bw.median(r["s"] for r in runs)
    vocab = step.state.student.config.vocab_size
    flops = bw.median(bw.step_flops(*step.blocks, vocab, r["rollouts"], r["prompt_width"], r["response_width"])["total"]
                      for r in runs)
    return {"s": s, "tok_s": bw.median(r["tokens"] / r["s"] for r in runs),
            "tokens": bw.median(r["tokens"] for r in runs), "positions": runs[0]["rollouts"] * runs[0]["response_width"],
            "gflop": flops / 1e9, "gflops": flops / 1e9 / s,
            "params": sum(p.numel() for p in step.state.student.parameters())}


def table(axis: str, rows: list[tuple[int, dict]], base: dict) -> str:
    name = AXES[axis][1]
    lines = [f"| {name} | s/step | x first row | tokens/s | response tokens / positions per step | GFLOP/step | GFLOP/s |"
             + (" student params |" if axis == "size" else ""),
             "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if axis == "size" else "")]
    for value, r in rows:
        lines.append(f"| {value} | {r['s']:.3f} | {r['s'] / base['s']:.2f} | {r['tok_s']:.0f} | {r['tokens']:.0f} / {r['positions']} | "
                     f"{r['gflop']:.2f} | {r['gflops']:.2f} |" + (f" {r['params']:,} |" if axis == "size" else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    bw.quiet()
    study = bw.default_study(args.config)
    base_point = (study["hparams"]["prompts_per_step"], study["hparams"]["max_new_tokens"], 1)
    rate = bw.matmul_gflops()
    print(f"single-thread float32 matmul (512^3): {rate:.1f} GFLOP/s; default point: {base_point[0]} prompts x "
          f"{study['hparams']['group_size']} rollouts, {base_point[1]} new tokens, student x1; "
          f"{args.warmup} warm-up + median of {args.rounds} round-robin steps per point", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        for axis in args.axes:
            keys = {v: {"batch": (v, base_point[1], 1), "budget": (base_point[0], v, 1),
                        "size": (*base_point[:2], v)}[axis] for v in getattr(args, axis)}
            result = measure_axis({v: point_step(root, study, *key) for v, key in keys.items()}, args.rounds, args.warmup)
            rows = list(result.items())
            print(f"\n{axis}:\n{table(axis, rows, rows[0][1])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
