"""Advantage designs: how a per-token reward from log_u becomes a (detached) advantage.

    A_k = a(u_k) + sum_{n>k} gamma^(n-k) * (-f(u_n))      over the response mask

where ``a`` is the design's immediate term:

- ``opd``       a(u) = -f(u)                 stop-gradient OPD (biased unless f is reverse KL)
- ``opd_plus``  a(u) = w_f(u) = -f(u)+u f'(u) OPD+ (unbiased)

gamma = 0 (the paper's choice) scores each token alone; gamma = 1 with ``opd_plus`` is the
sequence-level unbiased gradient of J^f = E_y sum_n f(u_n).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from opdpipe.divergences import Divergence, get_divergence
from opdpipe.registry import Registry


@dataclass(frozen=True)
class AdvantageDesign:
    name: str
    immediate: Callable[[Divergence, torch.Tensor], torch.Tensor]
    description: str


ADVANTAGES: Registry[AdvantageDesign] = Registry("advantage design")
ADVANTAGES.register("opd", AdvantageDesign("opd", lambda d, lu: d.opd(lu), "stop-gradient reward -f(u)"))
ADVANTAGES.register("opd_plus", AdvantageDesign("opd_plus", lambda d, lu: d.opd_plus(lu),
                                                "corrected advantage w_f(u) = -f(u) + u f'(u)"))


def get_design(name: str) -> AdvantageDesign:
    return ADVANTAGES.get(name)


def discounted_future(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """sum_{n>k} gamma^(n-k) r_n for every k. rewards: [B, T] (already masked)."""
    out = torch.zeros_like(rewards)
    if gamma == 0.0:
        return out
    running = torch.zeros_like(rewards[:, 0])
    for k in range(rewards.shape[1] - 1, -1, -1):
        out[:, k] = gamma * running          # future of k excludes r_k itself
        running = rewards[:, k] + gamma * running
    return out


def compute_advantages(design: str | AdvantageDesign, divergence: str | Divergence, log_u: torch.Tensor,
                       mask: torch.Tensor, gamma: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Detached advantages [B, T] for already-clipped log_u [B, T]; zero at masked positions."""
    design = get_design(design) if isinstance(design, str) else design
    div = get_divergence(divergence) if isinstance(divergence, str) else divergence
    if log_u.shape != mask.shape or log_u.dim() != 2:
        raise ValueError(f"log_u and mask must both be [B, T]; got {tuple(log_u.shape)} and {tuple(mask.shape)}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    m = mask.bool()
    log_u = torch.where(m, log_u.detach(), torch.zeros_like(log_u))
    zero = torch.zeros_like(log_u)
    rewards = torch.where(m, div.opd(log_u), zero)
    adv = torch.where(m, design.immediate(div, log_u) + discounted_future(rewards, gamma), zero)
    return adv, _stats("adv", adv, m)


def _stats(prefix: str, x: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    v = x[mask]
    if v.numel() == 0:
        return {f"{prefix}/mean": 0.0, f"{prefix}/std": 0.0, f"{prefix}/min": 0.0, f"{prefix}/max": 0.0}
    return {f"{prefix}/mean": v.mean().item(), f"{prefix}/std": v.std(unbiased=False).item(),
            f"{prefix}/min": v.min().item(), f"{prefix}/max": v.max().item()}
