"""Float32 linear layers on the CPU through oneDNN: the fast path's matrix multiplies.

torch runs a float32 `F.linear` through MKL's sgemm, which picks its code by CPU vendor: AVX-512 on
Intel CPUs, AVX2 on AMD ones even where the CPU has AVX-512 (measured here, an AMD EPYC with AVX-512:
110-114 GFLOP/s on one thread). torch also ships oneDNN, whose kernels pick the CPU's widest vector
unit by its features: 245-260 GFLOP/s on the same core, about 2x at the fast path's large shapes
(benchmarks/gemm_rate.py prints both). `linear(x, w)` is `F.linear(x, w)` (no bias) through oneDNN's
inner product, forward and backward, for float32 CPU tensors of at least MIN_MACS multiply-adds;
smaller ones (a decode step's 64-row projections, where oneDNN's per-call cost eats its gain) and
anything else (other dtypes, other devices, a torch without oneDNN) take `F.linear`. So does every
matmul on a CPU where MKL was the faster library: without AVX-512 (an AMD EPYC with AVX2 only: oneDNN
0.49-1.09x MKL's rate forward, 0.76-0.89x backward) and on Intel CPUs with AVX-512, where MKL runs
its AVX-512 code (an Intel Xeon, Ice Lake: oneDNN 0.51-1.32x forward, 0.34-0.83x backward, the step
1.16x slower); `preferred` holds the rule.

The same math in another order: a dot product over up to 96 inputs gives the same bits as MKL's
(one block), a longer one can differ in the last bits; tests/test_onednn.py holds values and
gradients to F.linear within float32 rounding. Same machine, same thread count: the same numbers,
run after run.
"""
from __future__ import annotations

import platform

import torch
import torch.nn.functional as F

from opdpipe.toggles import Toggle

MIN_MACS = 1 << 22  # 4.2 M: a decode step's largest projection (64 x 64 x 512, 2.1 M) stays on F.linear
_SWITCH = Toggle()
_BUILT_IN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")  # looked up once


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's vendor ("GenuineIntel", "AuthenticAMD", ...): Linux's cpuinfo, else what
    platform.processor() names (Windows); "" where neither tells (e.g. an ARM CPU)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return next((v for v in ("GenuineIntel", "AuthenticAMD") if v in platform.processor()), "")


def preferred(capability: str, vendor: str) -> bool:
    """oneDNN for a CPU whose widest vector unit torch reports as `capability`
    (torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT", ...) and whose `vendor`
    (cpu_vendor()) MKL runs no AVX-512 code on: AVX-512, and a vendor known and other than Intel."""
    return capability.startswith("AVX512") and vendor not in ("", "GenuineIntel")


_ON_THIS_CPU = preferred(torch.backends.cpu.get_cpu_capability(), cpu_vendor())  # fixed per machine: the same numbers run after run


def disabled():
    """Every linear through F.linear (MKL) inside this block: for tests and before/after benchmarks."""
    return _SWITCH.disabled()


def built_in() -> bool:
    """This torch ships oneDNN's inner product (whatever the CPU)."""
    return _BUILT_IN


def available() -> bool:
    """opdpipe's larger matmuls go through oneDNN: built in, preferred on this CPU, not disabled."""
    return _SWITCH.on and _BUILT_IN and _ON_THIS_CPU


def _mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a @ w.T through oneDNN: a [..., K] (made contiguous if it is not), w [N, K] (any strides)."""
    return torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _mm(x, w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = _mm(g, w.t()) if ctx.needs_input_grad[0] else None  # g @ w; w.t() is read in place
        gw = None
        if ctx.needs_input_grad[1]:  # g2.T @ x2 [N, K]: the narrower operand is the one copied to rows
            g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
            gw = _mm(g2.t(), x2.t()) if g2.shape[1] <= x2.shape[1] else _mm(x2.t(), g2.t()).t()
        return gx, gw


def _eligible(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == w.dtype == torch.float32 and w.dim() == 2
            and x.numel() // max(x.shape[-1], 1) * w.numel() >= MIN_MACS and available())


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """F.linear(x, w), no bias, through oneDNN where that is faster (module docstring)."""
    if not _eligible(x, w):
        return F.linear(x, w)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return _Linear.apply(x, w)
    return _mm(x, w)
