"""The importance-sampling policy loss:  loss = -agg(rho * A),  rho = exp(lp_new - lp_old).

At theta = theta_old, rho = 1 and grad(rho) = grad(lp_new): the gradient is REINFORCE's.
The paper uses no ratio clipping; PPO-style clipping is an explicit option (off by default).
"""
from __future__ import annotations

import torch

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Masked reduction of [B, T] values to a scalar. Empty rows never produce NaN."""
    m = mask.bool()
    v = torch.where(m, values, torch.zeros_like(values))  # where, not *: a NaN at a masked slot stays out
    if mode == "token_mean":  # every token in the batch weighs the same
        return v.sum() / m.sum().clamp_min(1)
    if mode == "seq_mean_token_mean":  # every sequence weighs the same
        return (v.sum(-1) / m.sum(-1).clamp_min(1)).mean()
    if mode == "seq_mean_token_sum":  # sum over tokens (the gradient of sum_n D_f), mean over sequences
        return v.sum(-1).mean()
    raise KeyError(f"unknown aggregation {mode!r}; known: {', '.join(AGGREGATIONS)}")


def policy_loss(lp_new: torch.Tensor, lp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                agg: str = "token_mean", clip_ratio: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """All inputs [B, T]; lp_old and advantages are treated as constants. Returns (loss, metrics)."""
    shapes = {t.shape for t in (lp_new, lp_old, advantages, mask)}
    if len(shapes) != 1:
        raise ValueError(f"policy_loss inputs must share one [B, T] shape, got {sorted(tuple(s) for s in shapes)}")
    m = mask.bool()
    log_ratio = torch.where(m, lp_new - lp_old.detach(), torch.zeros_like(lp_new))
    ratio = log_ratio.exp()
    adv = torch.where(m, advantages.detach(), torch.zeros_like(lp_new))
    per_token = -ratio * adv
    clip_frac = 0.0
    if clip_ratio is not None:
        if not clip_ratio > 0:
            raise ValueError(f"clip_ratio must be > 0 or None, got {clip_ratio!r}")
        clipped = -ratio.clamp(1 - clip_ratio, 1 + clip_ratio) * adv
        per_token = torch.maximum(per_token, clipped)
        clip_frac = ((clipped > -ratio * adv) & m).float().sum().item() / max(int(m.sum()), 1)
    loss = aggregate(per_token, mask, agg)
    n = max(int(m.sum()), 1)
    metrics = {"loss/policy": loss.item(), "loss/ratio_mean": (ratio * m).sum().item() / n,
               "loss/ratio_clip_frac": clip_frac}
    return loss, metrics
