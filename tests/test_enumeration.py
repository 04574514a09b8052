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
import pytest
import torch

from opdpipe.divergences import get_divergence
from opdpipe.enumeration import CHECKED as ALL
from opdpipe.enumeration import exact_grad, expected_surrogate_grad

TOL = 1e-6


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
