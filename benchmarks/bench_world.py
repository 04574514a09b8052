"""What benchmarks/vs_trl.py and benchmarks/scaling.py share: a small world of random-init checkpoints,
opdpipe's real OPD step through its public pieces, the step's FLOPs and the machine's matmul rate.

The step is `opdpipe.trainer.train_step` on a state from `opdpipe.trainer.build_state` (after
`validate`), exactly as `trainer.run` drives it, so a faster trainer is measured here without edits.
"""
from __future__ import annotations

import os

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "DO_NOT_TRACK", "HF_HUB_DISABLE_PROGRESS_BARS"):
    os.environ.setdefault(_k, "1")  # the embedded default: any accidental hub call fails fast

import statistics
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from opdpipe import data, trainer
from opdpipe.config import load, opd_hparams, variant_id
from opdpipe.hparams import DEFAULTS
from opdpipe.models import build_model, save_checkpoint
from opdpipe.tokenizer import build_char_tokenizer

DEFAULT_CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "default.yaml")
TASK = "math"


def quiet() -> None:
    """No progress bars from saving and loading the checkpoints (the benchmarks' tables stay readable)."""
    hf_logging.disable_progress_bar()


def default_study(config: str = DEFAULT_CONFIG) -> dict:
    """The embedded default's model blocks, math data spec and OPD hyperparameters (all of them, the
    trainer's defaults filled in; one thread)."""
    cfg = load(config)
    hp = opd_hparams(cfg, TASK, variant_id(cfg["variants"][0]))
    return {"student": dict(cfg["student"]["model"]), "teacher": dict(cfg["teacher"]["model"]),
            "data": cfg["tasks"][TASK], "seed": cfg["seed"], "hparams": {**DEFAULTS, **hp, "threads": 1}}


def make_data(root: Path, spec: dict, seed: int) -> Path:
    """The default study's math prompts (train / validation / test JSONL and manifest)."""
    out = Path(root) / "data"
    if not (out / "manifest.json").exists():
        data.run(TASK, spec, seed, out)
    return out


def make_checkpoint(root: Path, name: str, block: dict, seed: int) -> Path:
    """A random-init Llama checkpoint of `block` with the project tokenizer, as a save_pretrained folder."""
    out = Path(root) / name
    if not (out / "config.json").exists():
        save_checkpoint(build_model(block, build_char_tokenizer(), seed), build_char_tokenizer(), out)
    return out


def scaled(block: dict, width: int = 1, max_positions: int | None = None) -> dict:
    """`block` with hidden and intermediate sizes times `width` (attention heads too, so the head size
    stays): the non-embedding parameters grow width**2 times; depth is kept."""
    out = {**block, "hidden_size": block["hidden_size"] * width, "intermediate_size": block["intermediate_size"] * width,
           "num_attention_heads": block["num_attention_heads"] * width}
    if max_positions:
        out["max_position_embeddings"] = max(block["max_position_embeddings"], max_positions)
    return out


class OpdStep:
    """One opdpipe OPD run's state, stepped one training step at a time."""

    def __init__(self, world: dict, hparams: dict, divergence: str, design: str, out_dir: Path, seed: int = 0):
        hp = {**hparams, "eval_every": 10 ** 9, "bias_every": 0, "checkpoint_every": 0}  # not part of a step
        spec = trainer.RunSpec(TASK, divergence, design, seed, str(world["student"]), str(world["teacher"]),
                               str(world["data"]), str(out_dir), hp)
        self.cfg = trainer.validate(spec)
        torch.set_num_threads(self.cfg["threads"])
        self.state = trainer.build_state(spec, self.cfg, None, log=lambda *a: None)

    def __call__(self) -> dict:
        """Run one step; its wall seconds, generated tokens and padded widths."""
        t0 = time.perf_counter()
        m = trainer.train_step(self.state, self.cfg)
        wall = time.perf_counter() - t0
        self.state.step += 1
        s_ctx, _, resp, mask = self.state.last_batch
        return {"s": wall, "tokens": int(mask.sum()), "prompt_width": max(len(c) for c in s_ctx),
                "response_width": resp.shape[1], "rollouts": resp.shape[0], "split": {
                    k[5:-2]: m[k] for k in ("time/rollout_s", "time/teacher_s", "time/update_s")}}


# ---------------------------------------------------------------- FLOPs and the machine's rate
def forward_flops(block: dict, vocab: int, tokens: int, context: float, head_tokens: int | None = None) -> float:
    """Multiply-adds x 2 of a Llama forward pass over `tokens` positions that attend to `context`
    positions on average; the output head over `head_tokens` positions (default: all)."""
    d, f, n = block["hidden_size"], block["intermediate_size"], block["num_hidden_layers"]
    per_token = n * (4 * d * d + 3 * d * f) + n * 2 * d * context  # q,k,v,o + gated MLP; QK^T and AV
    head = vocab * d * (tokens if head_tokens is None else head_tokens)
    return 2.0 * (per_token * tokens + head)


def step_flops(student: dict, teacher: dict, vocab: int, rollouts: int, prompt: int, response: int,
               prompts: int | None = None) -> dict:
    """The work one OPD step needs, on [rollouts, prompt | response] rows (prompt = padded width):
    rollout = prefill (head on its last position) + one cached decode call per new token but the
    first (student, no grad);
    teacher = one scoring pass over prompt + response (head on the response positions only);
    update = student forward + backward (backward = 2 x forward) over prompt + response.
    prompts = None: every row computes its own prompt positions (TRL; transformers' path);
    prompts = the number of distinct prompts: each is computed once and shared by its rollouts
    (opdpipe.fastlm), the responses still attend to it."""
    B, P, T = rollouts, prompt, response
    C = prompts or B

    def full_pass(block):  # prompt positions (mean causal context P/2), then the response's (P + T/2)
        return forward_flops(block, vocab, C * P, P / 2, head_tokens=0) + \
            forward_flops(block, vocab, B * T, P + T / 2, head_tokens=B * T)
    roll = forward_flops(student, vocab, C * P, P / 2, head_tokens=C) + \
        forward_flops(student, vocab, B * (T - 1), P + T / 2, head_tokens=B * (T - 1))
    teach, update = full_pass(teacher), 3 * full_pass(student)
    return {"rollout": roll, "teacher": teach, "update": update, "total": roll + teach + update}


def matmul_gflops(n: int = 512, seconds: float = 1.0, mm=torch.mm) -> float:
    """Best single-thread float32 GFLOP/s of an n x n x n matmul `mm(a, b)` (torch's: MKL) over a few
    repeats (the library's limit for this arithmetic; a tiny model's own matmuls run below it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm(a, b)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        mm(a, b)
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return 2 * n ** 3 / best / 1e9


# ---------------------------------------------------------------- where a step's time goes, by kernel
KERNELS = ("matmul", "attention", "sampling draws")
_MATMUL = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "mkldnn::_linear_pointwise"}  # + opdpipe.onednn


def kernel_class(op: str) -> str | None:
    """The class of a torch operator, by its profiler name: matrix multiplies (MKL's, and oneDNN's inner
    product, opdpipe.onednn); attention (the fused scaled-dot-product kernels and their backward, the
    decode step's softmax); the exponential draws torch.multinomial samples with (the same generator
    state must give the same tokens, so they stay); None for everything else."""
    if op in _MATMUL:
        return "matmul"
    if "scaled_dot_product" in op or op in ("aten::_softmax", "aten::_softmax_backward_data"):
        return "attention"
    return "sampling draws" if op == "aten::exponential_" else None


def _op_name(op) -> str:
    """The profiler's name of a FlopCounterMode key: aten.mm -> aten::mm."""
    return str(op).split(".")[0] + "::" + op.__name__.split(".")[0]


def _linear_pointwise_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's inner product (opdpipe.onednn) x [..., K] @ w[N, K].T, for torch's FlopCounterMode."""
    rows = 1
    for n in x_shape[:-1]:
        rows *= n
    return 2 * rows * w_shape[0] * w_shape[1]


if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
    from torch.utils.flop_counter import register_flop_formula

    register_flop_formula(torch.ops.mkldnn._linear_pointwise)(_linear_pointwise_flops)


def kernel_split(step, steps: int) -> dict:
    """Run `step()` `steps` times under torch.profiler: seconds per step in each class of KERNELS (the
    operators' own time) and the wall seconds per step (the profiler adds a little to every operator);
    then one more step under torch's FlopCounterMode for the GFLOP its matmuls do."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    s = dict.fromkeys(KERNELS, 0.0)
    for e in prof.key_averages():
        if kind := kernel_class(e.key):
            s[kind] += e.self_cpu_time_total / 1e6 / steps  # microseconds in all steps -> s/step
    with FlopCounterMode(display=False) as counter:
        step()
    flops = sum(n for op, n in counter.get_flop_counts()["Global"].items() if _op_name(op) in _MATMUL)
    return {"s": s, "wall": wall, "matmul_gflop": flops / 1e9}


def median(xs) -> float:
    return statistics.median(xs)
