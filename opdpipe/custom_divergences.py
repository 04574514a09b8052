"""Divergences users bring: ``divergence: custom:<module>:<function>``.

The function gives the generator f as a torch function of ``log_u`` (elementwise, differentiable).
Everything else is derived from it, so OPD+ stays unbiased for any convex f:

- the OPD advantage ``-f(u)``;
- the OPD+ advantage ``w_f(u) = -f(u) + u f'(u)``, with ``u f'(u) = d f / d log_u`` by autograd;
- the exact full-vocabulary ``D_f(q || p)`` of the bias meter (the generic sum, in float64).

``<module>`` is an importable module (``my_pkg.divs``) or a path to a ``.py`` file (relative to the
working directory). Before any job, ``check`` verifies ``f(1) = 0``, convexity on a grid, and that
the derived OPD+ gradient equals the exact gradient on the enumerated policy of
``opdpipe.enumeration``; a failing check names what failed.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import math
from pathlib import Path

import torch

CONVEXITY_GRID = (-8.0, 8.0, 321)  # log u from, to, points
ENUMERATION_TOL = 1e-8  # max |OPD+ expected gradient - exact gradient| (float64)


def _load(spec: str):
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise ValueError(f"divergence 'custom:{spec}': write custom:<module or file.py>:<function>")
    try:
        if module.endswith(".py"):
            path = Path(module)
            loader = importlib.util.spec_from_file_location(f"opdpipe_custom_{path.stem}", path)
            if loader is None or not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            mod = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to see, named
        raise ValueError(f"divergence 'custom:{spec}': cannot import {module!r} ({type(err).__name__}: {err})") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"divergence 'custom:{spec}': {module!r} has no function {name!r}")
    return fn


def opd_plus_weight(f):
    """w_f as a function of log_u: -f + d f / d log_u, by autograd, elementwise (a constant tensor).

    Computed in float64: -f and u f' nearly cancel for large u (u ln u + u - u ln u for forward KL)."""
    def w(log_u: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = log_u.detach().double().requires_grad_(True)
            y = f(x)
            (dy,) = torch.autograd.grad(y.sum(), x)
        return (dy - y).detach().to(log_u.dtype)
    return w


@functools.lru_cache(maxsize=64)
def make(spec: str):
    """The Divergence for 'custom:<spec>' (imported once per process)."""
    from opdpipe.divergences import Divergence

    f = _load(spec)
    probe = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    try:
        out = f(probe)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"divergence 'custom:{spec}': f(log_u) fails on a tensor ({type(err).__name__}: {err})") \
            from None
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        raise ValueError(f"divergence 'custom:{spec}': f must map a tensor of log u to a tensor of the same shape "
                         "(elementwise torch operations)")
    return Divergence(f"custom:{spec}", f, opd_plus_weight(f), f"{spec}(u)", "-f(u) + u f'(u) (autograd)",
                      f"user divergence {spec}")


def check(div) -> None:
    """f(1) = 0, convex in u, and OPD+ unbiased by exact enumeration; raise ValueError naming the failure."""
    one = div.f(torch.zeros(1, dtype=torch.float64)).item()
    if not abs(one) <= 1e-6:
        raise ValueError(f"divergence {div.name!r} fails the check f(1) = 0: f(1) = {one:.6g}")
    _check_convex(div)
    _check_enumeration(div)


def _check_convex(div) -> None:
    lo, hi, n = CONVEXITY_GRID
    u = torch.linspace(lo, hi, n, dtype=torch.float64).exp()
    vals = div.f(u.log())
    if not torch.isfinite(vals).all():
        bad = u[~torch.isfinite(vals)][0].item()
        raise ValueError(f"divergence {div.name!r} fails the check 'finite on the grid': f(u) is not finite at u = {bad:.4g}")
    slopes = (vals[1:] - vals[:-1]) / (u[1:] - u[:-1])
    drop = slopes[1:] - slopes[:-1]
    tol = 1e-9 * (1.0 + slopes[1:].abs())
    if (drop < -tol).any():
        at = u[1:-1][drop < -tol][0].item()
        raise ValueError(f"divergence {div.name!r} fails the check 'convex in u': its slope decreases near u = {at:.4g} "
                         f"(checked on {n} points of log u in [{lo:g}, {hi:g}])")


def _check_enumeration(div) -> None:
    from opdpipe.enumeration import exact_grad, expected_surrogate_grad

    try:
        err = (expected_surrogate_grad("opd_plus", div.name, 0.0) - exact_grad(div.name, 0.0)).abs().max().item()
    except RuntimeError as exc:  # autograd cannot differentiate f
        err, why = math.nan, f" ({exc})"
    else:
        why = ""
    if not err <= ENUMERATION_TOL:
        shown = "nan" if math.isnan(err) else f"{err:.3g}"
        raise ValueError(f"divergence {div.name!r} fails the check 'OPD+ unbiased by exact enumeration': the derived "
                         f"OPD+ gradient differs from the exact gradient by {shown} (allowed {ENUMERATION_TOL:g}){why}; "
                         "f must be a differentiable torch function of log_u")
