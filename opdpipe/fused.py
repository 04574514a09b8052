"""Autograd functions of the fast path that give what their composite of torch ops gives, bit for bit,
in fewer passes over memory.

At the embedded models' sizes a training pass is mostly memory traffic besides its matmuls: the
teacher's SFT step on tool use moves tensors of 64 rows x ~115 positions x 384-768 channels through
a few dozen elementwise kernels, and each kernel saved is a pass saved. The values and gradients are
the composite's exactly (tests/test_fused.py): the same elementwise kernels on the same inputs, only
written where the next op reads them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        g, u = gate_up.chunk(2, dim=-1)
        s = F.silu(g)
        ctx.save_for_backward(gate_up, s)  # what autograd saves for the composite: g, u and silu(g)
        return s * u

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:
        gate_up, s = ctx.saved_tensors
        g, u = gate_up.chunk(2, dim=-1)
        grad = torch.empty_like(gate_up)
        dg, du = grad.chunk(2, dim=-1)
        torch.ops.aten.silu_backward(dy * u, g, grad_input=dg)  # as MulBackward0 then SiluBackward0
        torch.mul(dy, s, out=du)
        return grad


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """`F.silu(g) * u` of gate_up = [g | u] (the last dimension in halves), the SwiGLU MLP's gate. With
    a gradient to compute, both halves' gradients are written into one tensor: the composite writes
    them apart and then joins them (chunk's backward, a copy of the whole [..., 2I] gradient). Without
    one (rollouts, the teacher's scoring), the composite itself: a Function call costs more than a
    decode step's small kernels."""
    if torch.is_grad_enabled() and gate_up.requires_grad:
        return _SwiGLU.apply(gate_up)
    g, u = gate_up.chunk(2, dim=-1)
    return F.silu(g) * u


def rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x [..., d] (rotary pairs side by side) times the complex rotations rot [..., d/2]: for each pair
    (a, b), (a cos - b sin, a sin + b cos), as transformers' rotate_half form computes."""
    return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * rot).flatten(-2)


def _heads(h: torch.Tensor, rot: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The composite: h's q, k, v slots as [B, H, L, d] views, q and k rotated at once."""
    B, L = h.shape[:2]
    qkv = h.view(B, L, 3, n_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = rotate(qkv[:2], rot).unbind(0)
    return q, k, qkv[2]


class _Heads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, rot: torch.Tensor, n_heads: int):
        ctx.save_for_backward(rot)
        return _heads(h, rot, n_heads)

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor):
        (rot,) = ctx.saved_tensors
        B, H, L, d = dv.shape
        grad = torch.empty(B, L, 3, H, d, dtype=dv.dtype, device=dv.device)
        slots = grad.permute(2, 0, 3, 1, 4)
        # as the composite: the two gradients stacked, rotated back in one contiguous multiply (its
        # vectorised and scalar loops round a complex product alike only where they split it alike)
        slots[:2] = rotate(torch.stack([dq, dk]), rot.conj())
        slots[2] = dv
        return grad.view(B, L, 3 * H * d), None, None


def split_heads(h: torch.Tensor, rot: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attention's q, k, v [B, H, L, d] of a layer's joint projection h [B, L, 3D] (q and k rows in
    rotary pairs), q and k rotated by rot [B, 1, L, d/2]. With a gradient to compute, h's gradient is
    written slot by slot into one tensor: the composite (slicing, selecting, unbinding) builds it from
    zero-filled tensors added together, three more passes over all of it."""
    if torch.is_grad_enabled() and h.requires_grad:
        return _Heads.apply(h, rot, n_heads)
    return _heads(h, rot, n_heads)
