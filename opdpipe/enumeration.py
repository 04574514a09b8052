"""Exact expected gradients by enumeration, for a tabular autoregressive policy.

A student with one learnable logit row per prefix (vocab V, length L: every sequence enumerable)
and a fixed tabular teacher. ``expected_surrogate_grad`` is the probability-weighted sum, over all
sequences, of the gradient of the library's policy loss with the library's advantages, at
theta = theta_old. ``exact_grad`` is autograd on the objective itself:

- gamma = 0: sum_n E_prefix[grad D_f(q || p_theta)], prefix distribution held fixed;
- gamma = 1: grad J^f(theta), J^f = E_{y~p_theta} sum_n f(u_n).

No Monte Carlo noise: an unbiased design matches to float precision.
"""
from __future__ import annotations

import itertools

import torch

from opdpipe.advantages import compute_advantages
from opdpipe.divergences import DIVERGENCES, get_divergence
from opdpipe.losses import policy_loss

V, L = 3, 3
CHECKED = DIVERGENCES.fixed_names() + ["alpha:0.5", "alpha:-1", "alpha:2"]
SEQS = list(itertools.product(range(V), repeat=L))
PREFIXES = {p: i for i, p in enumerate(pre for n in range(L) for pre in itertools.product(range(V), repeat=n))}


def tables(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = (0.8 * torch.randn(len(PREFIXES), V, generator=g, dtype=torch.float64)).requires_grad_(True)
    teacher = 1.2 * torch.randn(len(PREFIXES), V, generator=g, dtype=torch.float64)
    return student, teacher


def full_logprobs(table: torch.Tensor) -> torch.Tensor:
    """[S, L, V] next-token log-probabilities at every prefix of every sequence."""
    idx = torch.tensor([[PREFIXES[s[:n]] for n in range(L)] for s in SEQS])
    return table[idx].log_softmax(-1)


def token_logprobs(full: torch.Tensor) -> torch.Tensor:
    y = torch.tensor(SEQS)
    return full.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # [S, L]


def expected_surrogate_grad(design: str, div: str, gamma: float, seed: int = 0) -> torch.Tensor:
    student, teacher = tables(seed)
    lp = token_logprobs(full_logprobs(student))
    lq = token_logprobs(full_logprobs(teacher))
    mask = torch.ones_like(lp)
    adv, _ = compute_advantages(design, div, (lq - lp).detach(), mask, gamma)
    weights = lp.sum(-1).exp().detach()  # p_theta(y): the sampling distribution
    total = 0.0
    for s in range(len(SEQS)):  # one sampled sequence at a time, as a batch of one
        loss, _ = policy_loss(lp[s:s + 1], lp[s:s + 1].detach(), adv[s:s + 1], mask[s:s + 1],
                              agg="seq_mean_token_sum")
        total = total + weights[s] * loss
    (grad,) = torch.autograd.grad(total, student)
    return grad


def exact_grad(div: str, gamma: float, seed: int = 0) -> torch.Tensor:
    student, teacher = tables(seed)
    d = get_divergence(div)
    full_p, full_q = full_logprobs(student), full_logprobs(teacher)
    if gamma == 0.0:
        weights = token_logprobs(full_p).sum(-1).exp().detach()
        objective = (weights * d.exact(full_q, full_p).sum(-1)).sum()
    else:
        lp, lq = token_logprobs(full_p), token_logprobs(full_q)
        objective = (lp.sum(-1).exp() * d.f(lq - lp).sum(-1)).sum()
    (grad,) = torch.autograd.grad(objective, student)
    return grad


def report() -> dict:
    """Print and return the OPD+ error and the OPD relative bias for every divergence and gamma."""
    print(f"{'divergence':<16} {'gamma':>5} {'OPD+ max|err|':>14} {'OPD rel.err':>12}")
    worst_plus, biased = 0.0, []
    for div in CHECKED:
        for gamma in (0.0, 1.0):
            g_true = exact_grad(div, gamma)
            err_plus = (expected_surrogate_grad("opd_plus", div, gamma) - g_true).abs().max().item()
            rel_opd = ((expected_surrogate_grad("opd", div, gamma) - g_true).norm() / g_true.norm()).item()
            worst_plus = max(worst_plus, err_plus)
            if div in ("forward_kl", "jsd"):
                biased.append(rel_opd)
            print(f"{div:<16} {gamma:>5.0f} {err_plus:>14.2e} {rel_opd:>12.4f}")
    print(f"largest OPD+ error: {worst_plus:.2e}")
    print(f"smallest stop-grad relative bias (forward_kl, jsd): {min(biased):.4f}")
    return {"largest_opd_plus_error": worst_plus, "smallest_stop_grad_bias": min(biased)}
