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
        """D_f(q || p) = sum_a p(a) f(q(a)/p(a)) over the last dim of log-prob tensors [..., V]."""
        if lp_q.shape != lp_p.shape:
            raise ValueError(f"exact divergence needs equal shapes, got {tuple(lp_q.shape)} and {tuple(lp_p.shape)}")
        if self.exact_fn is not None:
            return self.exact_fn(lp_q, lp_p)
        return (lp_p.exp() * self.f(lp_q - lp_p)).sum(-1)


DIVERGENCES: Registry[Divergence] = Registry("divergence")


def _kl(lp_a: torch.Tensor, lp_b: torch.Tensor) -> torch.Tensor:
    return (lp_a.exp() * (lp_a - lp_b)).sum(-1)  # KL(a || b)


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
    return (lambda lu: torch.expm1(lu) ** 2 * (-lu).exp()), (lambda lu: -2.0 * torch.expm1(-lu))


def _alpha_family(param: str) -> Divergence:
    try:
        a = float(param)
    except ValueError:
        raise ValueError(f"divergence 'alpha:<value>' needs a number, got {param!r}") from None
    if not math.isfinite(a) or a in (0.0, 1.0):
        raise ValueError(f"divergence 'alpha:{param}': alpha must be finite and not 0 or 1 (those are the KL limits)")
    f = lambda lu: (torch.expm1(a * lu) - a * torch.expm1(lu)) / (a * (a - 1.0))
    w = lambda lu: torch.expm1(a * lu) / a
    return Divergence(f"alpha:{param}", f, w, "(u^a - a u - (1-a)) / (a (a-1))", "(u^a - 1) / a",
                      f"Amari alpha-divergence, alpha={a:g}")


DIVERGENCES.register_family("alpha", _alpha_family)


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
