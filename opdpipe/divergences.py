"""f-divergences as pure functions of the log token ratio ``log_u = lp_teacher - lp_student``.

For a convex generator f with f(1) = 0, ``D_f(q || p) = E_{a~p}[f(q(a)/p(a))]``.
Each divergence provides:

- ``f(log_u)``          the generator evaluated at u = exp(log_u);
- ``opd(log_u)``        the stop-gradient OPD advantage  -f(u);
- ``opd_plus(log_u)``   the OPD+ advantage  w_f(u) = -f(u) + u f'(u)  (closed form);
- ``exact(lp_q, lp_p)`` the full-vocabulary D_f(q || p) over the last dimension.

Direction is always named from the teacher q and the student p:
``reverse_kl`` = KL(p || q) (f = -ln u), ``forward_kl`` = KL(q || p) (f = u ln u).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch

from opdpipe.registry import Registry

Fn = Callable[[torch.Tensor], torch.Tensor]
LN2 = math.log(2.0)


@dataclass(frozen=True)
class Divergence:
    name: str
    f: Fn  # generator f(u), as a function of log_u
    w: Fn  # OPD+ advantage w_f(u) = -f(u) + u f'(u), as a function of log_u
    formula_f: str
    formula_w: str
    description: str
    exact_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # stable closed form

    def opd(self, log_u: torch.Tensor) -> torch.Tensor:
        """Stop-gradient OPD advantage -f(u)."""
        return -self.f(log_u)

    def opd_plus(self, log_u: torch.Tensor) -> torch.Tensor:
        """OPD+ advantage w_f(u) = -f(u) + u f'(u)."""
        return self.w(log_u)

    def exact(self, lp_q: torch.Tensor, lp_p: torch.Tensor) -> torch.Tensor:
        """D_f(q || p) = sum_a p(a) f(q(a)/p(a)) over the last dim of log-prob tensors [..., V].

        Closed forms (KL, JSD) never form u and stay in the input dtype. The generic sum is computed
        in float64 (no intermediate such as (u - 1)^2 overflows for |log u| up to ~700) and returned in
        the input dtype. Zero probabilities take their limits: p(a) = 0 contributes
        q(a) * lim_{u->inf} f(u)/u (0 when q(a) = 0 too), q(a) = 0 contributes p(a) * f(0+).
        """
        if lp_q.shape != lp_p.shape:
            raise ValueError(f"exact divergence needs equal shapes, got {tuple(lp_q.shape)} and {tuple(lp_p.shape)}")
        if self.exact_fn is not None:
            return self.exact_fn(lp_q, lp_p)
        return _generic_exact(self.f, lp_q.double(), lp_p.double()).to(lp_q.dtype)


DIVERGENCES: Registry[Divergence] = Registry("divergence")


def _kl(lp_a: torch.Tensor, lp_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b); a(x) = 0 contributes 0 (the limit), b(x) = 0 < a(x) contributes inf."""
    terms = lp_a.exp() * (lp_a - lp_b)
    return torch.where(lp_a == -math.inf, torch.zeros_like(terms), terms).sum(-1)


LOG_U_MAX64 = 700.0  # exp stays finite in float64 below ~709


def _generic_exact(f: Fn, lp_q: torch.Tensor, lp_p: torch.Tensor) -> torch.Tensor:
    """sum_a p f(q/p) in float64, with the limits at zero probabilities (see Divergence.exact)."""
    p_zero, q_zero = lp_p == -math.inf, lp_q == -math.inf
    log_u = torch.where(p_zero | q_zero, torch.zeros_like(lp_q), lp_q - lp_p).clamp(-LOG_U_MAX64, LOG_U_MAX64)
    inner = lp_p.exp() * f(log_u)
    at_zero_q = lp_p.exp() * f(torch.full_like(lp_p, -LOG_U_MAX64))  # p * f(0+)
    slope = _slope_at_infinity(f)  # lim f(u)/u
    at_zero_p = lp_q.exp() * slope
    terms = torch.where(q_zero, at_zero_q, inner)
    terms = torch.where(p_zero, torch.where(q_zero, torch.zeros_like(terms), at_zero_p), terms)
    return terms.sum(-1)


def _slope_at_infinity(f: Fn) -> float:
    """lim_{u->inf} f(u)/u, inf when f grows faster than u (checked at two large log u in float64)."""
    lu = torch.tensor([300.0, 600.0], dtype=torch.float64)
    s = (f(lu) / lu.exp()).tolist()
    if not all(math.isfinite(x) for x in s) or abs(s[1] - s[0]) > 1e-6 * max(1.0, abs(s[1])):
        return math.inf
    return s[1]


def _jsd_exact(lp_q: torch.Tensor, lp_p: torch.Tensor) -> torch.Tensor:
    lp_m = torch.logaddexp(lp_q, lp_p) - LN2
    return 0.5 * (_kl(lp_q, lp_m) + _kl(lp_p, lp_m))


def register(name: str, formula_f: str, formula_w: str, description: str, exact_fn=None):
    """Decorator: the decorated function returns (f, w) as functions of log_u."""

    def wrap(make: Callable[[], tuple[Fn, Fn]]):
        f, w = make()
        DIVERGENCES.register(name, Divergence(name, f, w, formula_f, formula_w, description, exact_fn))
        return make

    return wrap


@register("reverse_kl", "-ln u", "ln u - 1", "KL(student || teacher); stop-grad OPD is unbiased",
          exact_fn=lambda q, p: _kl(p, q))
def _reverse_kl():
    return (lambda lu: -lu), (lambda lu: lu - 1.0)


@register("forward_kl", "u ln u", "u", "KL(teacher || student)", exact_fn=_kl)
def _forward_kl():
    return (lambda lu: lu.exp() * lu), (lambda lu: lu.exp())


def _log_half_one_plus_u(lu: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(lu) - LN2  # ln((1 + u) / 2), stable for large |log_u|


@register("jsd", "1/2 [u ln u - (1+u) ln((1+u)/2)]", "1/2 ln((1+u)/2)", "Jensen-Shannon divergence", exact_fn=_jsd_exact)
def _jsd():
    f = lambda lu: 0.5 * (lu.exp() * lu - (1.0 + lu.exp()) * _log_half_one_plus_u(lu))
    return f, (lambda lu: 0.5 * _log_half_one_plus_u(lu))


@register("total_variation", "1/2 |u - 1|", "1/2 sign(u - 1)", "total variation distance")
def _tv():
    return (lambda lu: 0.5 * torch.expm1(lu).abs()), (lambda lu: 0.5 * torch.sign(lu))


@register("hellinger", "(sqrt(u) - 1)^2", "sqrt(u) - 1", "squared Hellinger distance")
def _hellinger():
    return (lambda lu: torch.expm1(0.5 * lu) ** 2), (lambda lu: torch.expm1(0.5 * lu))


@register("pearson_chi2", "(u - 1)^2", "u^2 - 1", "Pearson chi-squared")
def _pearson():
    return (lambda lu: torch.expm1(lu) ** 2), (lambda lu: torch.expm1(2.0 * lu))


@register("neyman_chi2", "(1 - u)^2 / u", "2 (1 - 1/u)", "Neyman chi-squared")
def _neyman():
    # (u - 1)^2 / u = (u - 1)(1 - 1/u): no overflow of an intermediate (u - 1)^2
    return (lambda lu: torch.expm1(lu) * -torch.expm1(-lu)), (lambda lu: -2.0 * torch.expm1(-lu))


ALPHA_MIN_GAP = 1e-3  # |alpha| and |alpha - 1| below this: the float32 formula loses all precision
NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"


def _alpha_family(param: str) -> Divergence:
    if not re.fullmatch(NUMBER, param):
        raise ValueError(f"divergence 'alpha:{param}': alpha must be written as a plain number with no spaces, "
                         "e.g. alpha:0.5 or alpha:-1")
    a = float(param)
    if a == 0.0:
        raise ValueError("divergence 'alpha:0' is the reverse-KL limit of the Amari family, where its formula "
                         "divides by alpha (alpha - 1) = 0; use divergence reverse_kl")
    if a == 1.0:
        raise ValueError("divergence 'alpha:1' is the forward-KL limit of the Amari family, where its formula "
                         "divides by alpha (alpha - 1) = 0; use divergence forward_kl")
    if not math.isfinite(a) or min(abs(a), abs(a - 1.0)) < ALPHA_MIN_GAP:
        raise ValueError(f"divergence 'alpha:{param}': alpha must be finite and at least {ALPHA_MIN_GAP} away from "
                         "0 and 1 (closer, f(u) cancels to nothing in float32; use reverse_kl or forward_kl, its limits)")
    f = lambda lu: (torch.expm1(a * lu) - a * torch.expm1(lu)) / (a * (a - 1.0))
    w = lambda lu: torch.expm1(a * lu) / a
    return Divergence(f"alpha:{param}", f, w, "(u^a - a u - (1-a)) / (a (a-1))", "(u^a - 1) / a",
                      f"Amari alpha-divergence, alpha={a:g}")


DIVERGENCES.register_family("alpha", _alpha_family)


def _custom_family(spec: str) -> Divergence:
    from opdpipe import custom_divergences

    return custom_divergences.make(spec)


DIVERGENCES.register_family("custom", _custom_family)  # custom:<module or file.py>:<function>


def get_divergence(name: str) -> Divergence:
    return DIVERGENCES.get(name)


def clip_log_u(log_u: torch.Tensor, bound: float, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Clip log_u to [-bound, bound] before any exponentiation; return (clipped, clip fraction).

    Raises on non-finite log_u at unmasked positions: a NaN or inf there means a scoring bug.
    """
    if not bound > 0:
        raise ValueError(f"log_u clip bound must be > 0, got {bound!r}")
    valid = torch.ones_like(log_u, dtype=torch.bool) if mask is None else mask.bool()
    if mask is not None and mask.shape != log_u.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match log_u shape {tuple(log_u.shape)}")
    bad = ~torch.isfinite(log_u) & valid
    if bad.any():
        raise ValueError(f"log_u has {int(bad.sum())} non-finite value(s) at unmasked positions "
                         f"(e.g. {log_u[bad][0].item()}); teacher/student log-probs must be finite")
    clipped = torch.where(valid, log_u, torch.zeros_like(log_u)).clamp(-bound, bound)
    n = valid.sum().clamp_min(1)
    frac = ((log_u.abs() > bound) & valid).sum() / n
    return clipped, float(frac)


def max_safe_clip(div: Divergence, upper: float = 1000.0) -> float:
    """Largest log_u clip (to 0.01) at which f(u), the OPD and the OPD+ advantages are finite in float32."""
    lo, hi = 0.0, upper
    if _finite_on(div, hi):
        return hi
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _finite_on(div, mid) else (lo, mid)
    return math.floor(lo * 100) / 100


def _finite_on(div: Divergence, bound: float) -> bool:
    lu = torch.cat([torch.linspace(-bound, bound, 2001), torch.zeros(1)]).float()
    return bool(torch.isfinite(div.f(lu)).all() and torch.isfinite(div.opd_plus(lu)).all())


def check_clip(div: Divergence, bound: float, where: str = "") -> None:
    """Refuse a clip at which the divergence's advantages overflow float32 (they would turn the weights NaN)."""
    if _finite_on(div, bound):
        return
    safe = max_safe_clip(div)
    raise ValueError(f"opd.log_u_clip = {bound!r}{where} with divergence {div.name!r}: f(u) or its advantages "
                     f"overflow float32 for |log u| up to {bound!r}; allowed: opd.log_u_clip <= {safe} for "
                     "this divergence")
