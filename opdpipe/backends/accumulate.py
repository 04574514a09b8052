"""Micro-batches: gradient accumulation within one optimizer step (distinct from `num_substeps`).

`num_substeps` splits a step's rollouts into minibatches, one optimizer step each. Micro-batches
split each minibatch further into forward/backward passes of `micro_batch_size` rollouts whose
gradients add up to exactly the minibatch's: each micro-batch's loss is weighted by its share
of the minibatch's tokens (token_mean) or sequences (the seq_mean aggregations).
"""
from __future__ import annotations

import torch

from opdpipe.advantages import compute_advantages
from opdpipe.divergences import clip_log_u
from opdpipe.losses import policy_loss
from opdpipe.scoring import sequence_logprobs


def micro_weight(mask_micro: torch.Tensor, mask_mb: torch.Tensor, agg: str) -> float:
    if agg == "token_mean":
        return float(mask_micro.sum()) / max(float(mask_mb.sum()), 1.0)
    return mask_micro.shape[0] / mask_mb.shape[0]


@torch.no_grad()
def logprobs_in_micro_batches(lp_fn, rows: torch.Tensor, size: int) -> torch.Tensor:
    """lp_fn(row indices) -> [b, T] log-probs, evaluated `size` rows at a time without gradients."""
    return torch.cat([lp_fn(r) for r in rows.split(size)], dim=0)


def teacher_in_micro_batches(state, cfg, t_ctx, resp, mask) -> torch.Tensor:
    """The frozen teacher's sampled-token log-probs [B, T], micro_batch_size rollouts per pass."""
    from opdpipe.scoring import teacher_logprobs

    rows = torch.arange(len(resp), device=resp.device)
    return logprobs_in_micro_batches(lambda r: teacher_logprobs(
        state.teacher, [t_ctx[i] for i in r.tolist()], resp[r], mask[r], state.tok.pad_token_id,
        cfg["logprob_chunk"]), rows, cfg["micro_batch_size"] or len(resp))


def accumulate(lp_fn, mb: torch.Tensor, size: int, lp_old, adv, mask, agg: str,
               clip_ratio, check_loss=None) -> tuple[float, dict]:
    """Backward passes over the micro-batches of minibatch `mb` (row indices); returns (loss, stats).
    check_loss(value) runs on each micro-batch's loss before its backward pass."""
    loss_total, clip_total = 0.0, 0.0
    for micro in mb.split(size):
        loss, stats = policy_loss(lp_fn(micro), lp_old[micro], adv[micro], mask[micro], agg, clip_ratio)
        if check_loss is not None:
            check_loss(loss.item())
        w = micro_weight(mask[micro], mask[mb], agg)
        (loss * w).backward()
        loss_total += loss.item() * w
        clip_total += stats["loss/ratio_clip_frac"] * micro_weight(mask[micro], mask[mb], "token_mean")
    return loss_total, {"loss/ratio_clip_frac": clip_total}


def backend_update(state, cfg, s_ctx, resp, mask, lq, minibatches, checks=(None, None)):
    """One step's update of a pretrained student (the trainer's `state`): autocast, chunked log-probs,
    micro-batches. Returns (losses, grad_norms, log_u, clip_frac, adv_stats, loss_stats).
    checks = (require_finite(what, value), require_finite_weights(model)): the trainer's guards."""
    finite, finite_weights = checks
    pad, chunk, size = state.tok.pad_token_id, cfg["logprob_chunk"], cfg["micro_batch_size"] or len(resp)

    def lp_fn(rows):
        with state.runtime.autocast():
            return sequence_logprobs(state.student, [s_ctx[i] for i in rows.tolist()], resp[rows], mask[rows],
                                     pad, chunk)

    rows = torch.arange(len(resp), device=resp.device)
    lp_old = logprobs_in_micro_batches(lp_fn, rows, size)  # theta_0, [B, T]
    log_u, clip_frac = clip_log_u(lq - lp_old, cfg["log_u_clip"], mask)
    adv, adv_stats = compute_advantages(state.design, state.div, log_u, mask, cfg["gamma"])
    if cfg["normalize_advantages"]:
        m = mask.bool()
        adv = torch.where(m, (adv - adv[m].mean()) / (adv[m].std() + 1e-8), adv)
    losses, grad_norms, loss_stats = [], [], {}
    params = [p for p in state.student.parameters() if p.requires_grad]
    for mb in minibatches:
        state.opt.zero_grad(set_to_none=True)
        loss, loss_stats = accumulate(lp_fn, mb.to(resp.device), size, lp_old, adv, mask, cfg["loss_agg"],
                                      cfg["clip_ratio"], finite and (lambda v: finite("loss", v)))
        grad_norms.append(torch.nn.utils.clip_grad_norm_(params, cfg["max_grad_norm"]).item())
        if finite:
            finite("gradient norm", grad_norms[-1])
        state.opt.step()
        if finite_weights:
            finite_weights(state.student)
        losses.append(loss)
    return losses, grad_norms, log_u, clip_frac, adv_stats, loss_stats
