"""MKL's float32 matmul (torch's F.linear) against oneDNN's (opdpipe.onednn) on this CPU, one thread, at
the shapes of the embedded default's OPD step and SFT step: GFLOP/s of each and whether they give the
same bits.

    python benchmarks/gemm_rate.py [--seconds 0.5]

Shapes are (rows, inputs, outputs) of `x @ w.T`: the response positions of 64 rollouts x 31 tokens
(1984 rows), 16 shared prompts x 44 positions (704 rows), a 64-row decode step; the backward pair of
a linear layer (input gradient g @ w, weight gradient g.T @ x) is timed as one. Each time is the best
of repeated calls over `--seconds`, so it is the kernels' rate with warm caches, an upper bound for
the step. On AMD CPUs with AVX-512, MKL takes its AVX2 code and oneDNN is about twice as fast; on
Intel CPUs with AVX-512 (MKL runs its AVX-512 code) and on CPUs without AVX-512, MKL was faster
(opdpipe then keeps F.linear: opdpipe.onednn.preferred).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from opdpipe import onednn

SHAPES = [(64, 64, 192), (64, 64, 512), (64, 256, 64), (704, 64, 512), (1984, 64, 192), (1984, 64, 512),
          (1984, 256, 64), (704, 96, 768), (1984, 96, 768), (1984, 384, 96), (2048, 96, 99)]


def best(fn, seconds: float) -> float:
    fn()
    b, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        b = min(b, time.perf_counter() - t0)
    return b


def row(M: int, K: int, N: int, seconds: float) -> str:
    g = torch.Generator().manual_seed(0)
    x, w, grad = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g), torch.randn(M, N, generator=g)
    flops = 2 * M * K * N
    fwd = {"mkl": lambda: F.linear(x, w), "onednn": lambda: onednn._mm(x, w)}
    bwd = {"mkl": lambda: (grad @ w, grad.t() @ x),
           "onednn": lambda: (onednn._mm(grad, w.t()), onednn._mm(grad.t(), x.t()))}
    rates = [flops * n / best(fns[k], seconds) / 1e9 for fns, n in ((fwd, 1), (bwd, 2)) for k in ("mkl", "onednn")]
    same = torch.equal(fwd["mkl"](), fwd["onednn"]())
    above = "no (F.linear)" if M * K * N < onednn.MIN_MACS else "yes" if onednn.available() else \
        "no (F.linear: MKL preferred on this CPU)"
    return (f"| {M} x {K} x {N} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.2f} | {rates[2]:.0f} | "
            f"{rates[3]:.0f} | {rates[3] / rates[2]:.2f} | {'yes' if same else 'no'} | {above} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=0.5, help="timing per kernel and shape")
    args = p.parse_args(argv)
    if not args.seconds > 0:
        p.error(f"--seconds = {args.seconds}: allowed: a positive number")
    if not onednn.built_in():
        sys.exit("this torch has no oneDNN inner product (torch.ops.mkldnn._linear_pointwise): opdpipe uses F.linear")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU {onednn.cpu_vendor() or 'vendor unknown'} "
          f"{torch.backends.cpu.get_cpu_capability()}, 1 thread, GFLOP/s (best of {args.seconds:g} s per kernel)")
    print("| rows x inputs x outputs | forward MKL | forward oneDNN | x | backward MKL | backward oneDNN | x "
          "| same forward bits | oneDNN in opdpipe |\n|---|---:|---:|---:|---:|---:|---:|---|---|")
    for M, K, N in SHAPES:
        print(row(M, K, N, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
