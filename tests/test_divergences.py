"""Closed forms of the divergence registry (paper Table 1 and the derived generators)."""
import math

import pytest
import torch

from opdpipe.divergences import DIVERGENCES, clip_log_u, get_divergence

ALL = DIVERGENCES.fixed_names() + ["alpha:0.5", "alpha:-1", "alpha:2"]
U = torch.tensor([0.05, 0.3, 0.7, 0.95, 1.05, 1.6, 3.0, 12.0], dtype=torch.float64)
LOG_U = U.log()


def test_paper_table1_closed_forms():
    u, lu = U, LOG_U
    tol = dict(rtol=1e-12, atol=1e-12)
    rk, fk, js = (get_divergence(n) for n in ("reverse_kl", "forward_kl", "jsd"))
    torch.testing.assert_close(rk.opd(lu), u.log(), **tol)
    torch.testing.assert_close(rk.opd_plus(lu), u.log() - 1, **tol)
    torch.testing.assert_close(fk.opd(lu), -u * u.log(), **tol)
    torch.testing.assert_close(fk.opd_plus(lu), u, **tol)
    f_js = 0.5 * (u * u.log() - (1 + u) * ((1 + u) / 2).log())
    torch.testing.assert_close(js.opd(lu), -f_js, **tol)
    torch.testing.assert_close(js.opd_plus(lu), 0.5 * ((1 + u) / 2).log(), **tol)


@pytest.mark.parametrize("name", ALL)
def test_w_equals_minus_f_plus_u_fprime_by_finite_differences(name):
    d = get_divergence(name)
    h = 1e-6
    f = lambda u: d.f(u.log())
    fprime = (f(U * (1 + h)) - f(U * (1 - h))) / (2 * h * U)  # central difference in u
    expected = -f(U) + U * fprime
    torch.testing.assert_close(d.opd_plus(LOG_U), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ALL)
def test_generator_vanishes_at_one_and_w_is_monotone(name):
    d = get_divergence(name)
    assert abs(d.f(torch.zeros(1, dtype=torch.float64)).item()) < 1e-12
    w = d.opd_plus(LOG_U)
    assert torch.all(w[1:] >= w[:-1]), f"{name}: w_f must be non-decreasing in u, got {w.tolist()}"


def test_stop_grad_is_not_monotone_for_forward_kl_and_jsd():
    for name in ("forward_kl", "jsd"):
        a = get_divergence(name).opd(LOG_U)
        diffs = a[1:] - a[:-1]
        assert (diffs > 0).any() and (diffs < 0).any(), name


def _pair():
    q = torch.tensor([0.1, 0.9], dtype=torch.float64).log()
    p = torch.tensor([0.9, 0.1], dtype=torch.float64).log()
    return q, p


def test_exact_kl_known_pair():
    q, p = _pair()
    assert get_divergence("forward_kl").exact(q, p).item() == pytest.approx(0.8 * math.log(9), abs=1e-12)
    assert get_divergence("reverse_kl").exact(q, p).item() == pytest.approx(0.8 * math.log(9), abs=1e-12)


def test_exact_kl_directions_on_asymmetric_pair():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 7, generator=g, dtype=torch.float64).log_softmax(-1)
    p = torch.randn(5, 7, generator=g, dtype=torch.float64).log_softmax(-1)
    kl_qp = (q.exp() * (q - p)).sum(-1)
    kl_pq = (p.exp() * (p - q)).sum(-1)
    torch.testing.assert_close(get_divergence("forward_kl").exact(q, p), kl_qp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(get_divergence("reverse_kl").exact(q, p), kl_pq, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(kl_qp, kl_pq)


@pytest.mark.parametrize("name", ALL)
def test_exact_divergence_zero_for_identical_and_positive_otherwise(name):
    g = torch.Generator().manual_seed(1)
    p = torch.randn(4, 6, generator=g, dtype=torch.float64).log_softmax(-1)
    q = torch.randn(4, 6, generator=g, dtype=torch.float64).log_softmax(-1)
    d = get_divergence(name)
    assert d.exact(p, p).abs().max().item() < 1e-12
    assert (d.exact(q, p) > 1e-6).all()


def test_jsd_symmetric_and_bounded():
    g = torch.Generator().manual_seed(2)
    js = get_divergence("jsd")
    p = (5 * torch.randn(50, 8, generator=g, dtype=torch.float64)).log_softmax(-1)
    q = (5 * torch.randn(50, 8, generator=g, dtype=torch.float64)).log_softmax(-1)
    torch.testing.assert_close(js.exact(q, p), js.exact(p, q), rtol=1e-10, atol=1e-12)
    assert js.exact(q, p).max().item() <= math.log(2) + 1e-12
    disjoint = js.exact(torch.tensor([0.0, -1e4], dtype=torch.float64), torch.tensor([-1e4, 0.0], dtype=torch.float64))
    assert disjoint.item() == pytest.approx(math.log(2), abs=1e-9)


def test_adding_linear_term_shifts_w_by_constant():
    # f + c(u-1) leaves D_f unchanged and shifts w_f by the constant c (here c = 1): a pure baseline.
    rk = get_divergence("reverse_kl")
    shifted = lambda lu: rk.f(lu) + torch.expm1(lu)
    h = 1e-6
    fp = (shifted((U * (1 + h)).log()) - shifted((U * (1 - h)).log())) / (2 * h * U)
    w_shifted = -shifted(LOG_U) + U * fp
    torch.testing.assert_close(w_shifted - rk.opd_plus(LOG_U), torch.ones_like(U), rtol=1e-6, atol=1e-6)
    g = torch.Generator().manual_seed(3)
    p = torch.randn(3, 5, generator=g, dtype=torch.float64).log_softmax(-1)
    q = torch.randn(3, 5, generator=g, dtype=torch.float64).log_softmax(-1)
    d_shifted = (p.exp() * shifted(q - p)).sum(-1)
    torch.testing.assert_close(d_shifted, rk.exact(q, p), rtol=1e-10, atol=1e-12)


def test_registry_errors_name_the_input_and_the_choices():
    with pytest.raises(KeyError, match="unknown divergence 'kl'.*forward_kl.*reverse_kl"):
        get_divergence("kl")
    with pytest.raises(ValueError, match="alpha:1"):
        get_divergence("alpha:1")
    with pytest.raises(ValueError, match="must be written as a plain number"):
        get_divergence("alpha:abc")
    with pytest.raises(ValueError, match="already registered"):
        DIVERGENCES.register("jsd", get_divergence("jsd"))
    for required in ("reverse_kl", "forward_kl", "jsd", "total_variation", "hellinger", "pearson_chi2", "neyman_chi2"):
        assert required in DIVERGENCES


def test_clip_log_u_bounds_and_reports_fraction():
    lu = torch.tensor([[0.0, 30.0, -30.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    clipped, frac = clip_log_u(lu, 20.0, mask)
    assert clipped.tolist() == [[0.0, 20.0, -20.0, 0.0]]
    assert frac == pytest.approx(2 / 3)


def test_clip_log_u_rejects_non_finite_and_bad_shapes():
    with pytest.raises(ValueError, match="non-finite"):
        clip_log_u(torch.tensor([[0.0, float("nan")]]), 20.0)
    # a NaN at a masked position is ignored
    clipped, _ = clip_log_u(torch.tensor([[0.0, float("nan")]]), 20.0, torch.tensor([[1, 0]]))
    assert torch.isfinite(clipped).all()
    with pytest.raises(ValueError, match="mask shape"):
        clip_log_u(torch.zeros(2, 3), 20.0, torch.ones(2, 4))
    with pytest.raises(ValueError, match="bound must be > 0"):
        clip_log_u(torch.zeros(2, 3), 0.0)


def test_exact_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        get_divergence("jsd").exact(torch.zeros(3), torch.zeros(4))


@pytest.mark.parametrize("name", ["reverse_kl", "forward_kl", "jsd"])
def test_stable_exact_forms_agree_with_the_generic_sum(name):
    g = torch.Generator().manual_seed(4)
    p = torch.randn(6, 9, generator=g, dtype=torch.float64).log_softmax(-1)
    q = torch.randn(6, 9, generator=g, dtype=torch.float64).log_softmax(-1)
    d = get_divergence(name)
    generic = (p.exp() * d.f(q - p)).sum(-1)
    torch.testing.assert_close(d.exact(q, p), generic, rtol=1e-10, atol=1e-12)


def _reference_exact(name, q, p):
    """sum_a p f(q/p) in float64 by hand, with the limits at zero probabilities."""
    f = {"pearson_chi2": lambda u: (u - 1) ** 2, "neyman_chi2": lambda u: (1 - u) ** 2 / u,
         "hellinger": lambda u: (math.sqrt(u) - 1) ** 2, "total_variation": lambda u: abs(u - 1) / 2,
         "alpha:3": lambda u: (u ** 3 - 3 * u + 2) / 6}[name]
    slope = {"hellinger": 1.0, "total_variation": 0.5, "neyman_chi2": 1.0}  # lim f(u)/u
    total = 0.0
    for qa, pa in zip(q, p):
        if pa == 0.0:
            total += 0.0 if qa == 0.0 else qa * slope[name]
        else:
            total += pa * f(qa / pa)
    return total


@pytest.mark.parametrize("name, log_u", [("pearson_chi2", 50.0), ("neyman_chi2", 60.0), ("alpha:3", 30.0)])
def test_exact_divergence_is_finite_in_float32_where_a_product_would_overflow(name, log_u):
    # one token with q/p = e^log_u: the product p * f(u) forms e^100, e^120, e^90 (beyond float32's e^88)
    # on the way; the divergence itself fits in float32
    a, b = math.exp(-1.0), math.exp(-1.0 - log_u)
    q, p = [a, b, 1 - a - b], [b, a, 1 - a - b]
    lq, lp = torch.tensor([q]).log().float(), torch.tensor([p]).log().float()
    got = get_divergence(name).exact(lq, lp)
    want = _reference_exact(name, q, p)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert got.item() == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("name", ["hellinger", "total_variation", "neyman_chi2"])
def test_exact_divergence_takes_the_limit_at_zero_probabilities(name):
    q, p = [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]  # q > 0 where p = 0, and q = 0 where p > 0
    lq, lp = torch.tensor([q]).log(), torch.tensor([p]).log()
    got = get_divergence(name).exact(lq, lp)
    if name == "neyman_chi2":  # f(0+) = inf: the divergence is infinite, not NaN
        assert got.item() == math.inf
    else:
        assert got.item() == pytest.approx(_reference_exact(name, q, p), rel=1e-6)


def test_kl_and_jsd_with_zero_probabilities_are_not_nan():
    lq, lp = torch.tensor([[0.5, 0.5, 0.0]]).log(), torch.tensor([[0.25, 0.25, 0.5]]).log()
    assert get_divergence("forward_kl").exact(lq, lp).item() == pytest.approx(math.log(2.0))  # KL(q||p)
    assert get_divergence("reverse_kl").exact(lq, lp).item() == math.inf
    assert math.isfinite(get_divergence("jsd").exact(lq, lp).item())
