"""Exact unbiasedness by enumeration: no Monte Carlo noise.

A tabular autoregressive student (one learnable logit row per prefix; vocab 3, length 3, so all
27 sequences are enumerable) and a fixed tabular teacher. The *expected* surrogate gradient is
the probability-weighted sum over every sequence of the gradient of the library's policy loss
(with the library's advantages), evaluated at theta = theta_old. It is compared with autograd on
the exact objective:

- gamma = 0: sum_n E_prefix[grad D_f(q || p_theta)], prefix distribution held fixed;
- gamma = 1: grad J^f(theta),  J^f = E_{y~p_theta} sum_n f(u_n).

OPD+ must match for every divergence; stop-grad OPD must match only for reverse KL.
"""
import itertools

import pytest
import torch

from opdpipe.advantages import compute_advantages
from opdpipe.divergences import DIVERGENCES, get_divergence
from opdpipe.losses import policy_loss

V, L = 3, 3
TOL = 1e-6
ALL = DIVERGENCES.fixed_names() + ["alpha:0.5", "alpha:-1", "alpha:2"]
SEQS = list(itertools.product(range(V), repeat=L))
PREFIXES = {p: i for i, p in enumerate(pre for n in range(L) for pre in itertools.product(range(V), repeat=n))}


def _tables(seed=0):
    g = torch.Generator().manual_seed(seed)
    student = (0.8 * torch.randn(len(PREFIXES), V, generator=g, dtype=torch.float64)).requires_grad_(True)
    teacher = 1.2 * torch.randn(len(PREFIXES), V, generator=g, dtype=torch.float64)
    return student, teacher


def _full_logprobs(table):
    """[S, L, V] log-probabilities of the next token at every prefix of every sequence."""
    idx = torch.tensor([[PREFIXES[s[:n]] for n in range(L)] for s in SEQS])
    return table[idx].log_softmax(-1)


def _token_logprobs(full):
    y = torch.tensor(SEQS)
    return full.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # [S, L]


def expected_surrogate_grad(design, div, gamma, seed=0):
    student, teacher = _tables(seed)
    lp = _token_logprobs(_full_logprobs(student))
    lq = _token_logprobs(_full_logprobs(teacher))
    mask = torch.ones_like(lp)
    adv, _ = compute_advantages(design, div, (lq - lp).detach(), mask, gamma)
    weights = lp.sum(-1).exp().detach()  # p_theta(y), the sampling distribution
    total = 0.0
    for s in range(len(SEQS)):  # one sampled sequence at a time, as a batch of one
        loss, _ = policy_loss(lp[s:s + 1], lp[s:s + 1].detach(), adv[s:s + 1], mask[s:s + 1],
                              agg="seq_mean_token_sum")
        total = total + weights[s] * loss
    (grad,) = torch.autograd.grad(total, student)
    return grad


def exact_grad(div, gamma, seed=0):
    student, teacher = _tables(seed)
    d = get_divergence(div)
    full_p, full_q = _full_logprobs(student), _full_logprobs(teacher)
    if gamma == 0.0:  # sum_n E_prefix[D_f(q||p)], prefix weights detached
        weights = _token_logprobs(full_p).sum(-1).exp().detach()
        objective = (weights * d.exact(full_q, full_p).sum(-1)).sum()
    else:  # J^f = sum_y p(y) sum_n f(u_n), all of it differentiable
        lp, lq = _token_logprobs(full_p), _token_logprobs(full_q)
        objective = (lp.sum(-1).exp() * d.f(lq - lp).sum(-1)).sum()
    (grad,) = torch.autograd.grad(objective, student)
    return grad


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("div", ALL)
def test_opd_plus_is_exactly_unbiased(div, gamma):
    g_est, g_true = expected_surrogate_grad("opd_plus", div, gamma), exact_grad(div, gamma)
    assert g_true.norm() > 1e-3, "degenerate test: the true gradient is ~0"
    err = (g_est - g_true).abs().max().item()
    assert err < TOL, f"OPD+ {div} gamma={gamma}: max |grad error| = {err:.3g}"


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_stop_grad_opd_is_unbiased_for_reverse_kl(gamma):
    err = (expected_surrogate_grad("opd", "reverse_kl", gamma) - exact_grad("reverse_kl", gamma)).abs().max().item()
    assert err < TOL


@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("div", ["forward_kl", "jsd"])
def test_stop_grad_opd_is_biased_for_forward_kl_and_jsd(div, gamma):
    rel = _rel_err(expected_surrogate_grad("opd", div, gamma), exact_grad(div, gamma))
    assert rel > 0.05, f"stop-grad OPD {div} gamma={gamma} should be biased, relative error only {rel:.3g}"


def test_reverse_kl_correction_term_is_a_pure_baseline():
    # u f'(u) = -1 for reverse KL: OPD and OPD+ advantages differ by exactly -1 everywhere.
    lu = torch.linspace(-5, 5, 11, dtype=torch.float64)
    d = get_divergence("reverse_kl")
    torch.testing.assert_close(d.opd_plus(lu) - d.opd(lu), -torch.ones_like(lu))
