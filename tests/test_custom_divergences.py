"""Divergences users bring: derived advantages equal the built-ins', and bad ones are refused by name."""
import sys

import pytest
import torch
import yaml

from opdpipe.advantages import compute_advantages
from opdpipe.config import ConfigError, validate
from opdpipe.divergences import get_divergence

from test_packaging import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))


def test_a_custom_f_equal_to_a_builtin_gets_the_builtins_advantages():
    mine, builtin = get_divergence("custom:user_divergences:forward_kl_again"), get_divergence("forward_kl")
    log_u = torch.linspace(-20.0, 20.0, 401).reshape(1, -1)
    mask = torch.ones_like(log_u)
    for design in ("opd", "opd_plus"):
        for gamma in (0.0, 1.0):
            a, _ = compute_advantages(design, mine, log_u, mask, gamma)
            b, _ = compute_advantages(design, builtin, log_u, mask, gamma)
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-6), (design, gamma)


def test_the_exact_divergence_comes_from_the_same_function():
    g = torch.Generator().manual_seed(0)
    lq = torch.randn(4, 50, generator=g).log_softmax(-1)
    lp = torch.randn(4, 50, generator=g).log_softmax(-1)
    mine = get_divergence("custom:user_divergences:squared_hellinger_times_two").exact(lq, lp)
    assert torch.allclose(mine, 2.0 * get_divergence("hellinger").exact(lq, lp), rtol=1e-6)


def test_a_custom_divergence_from_a_file_path_passes_the_checks():
    from opdpipe import custom_divergences

    div = get_divergence(f"custom:{FIXTURES / 'user_divergences.py'}:squared_hellinger_times_two")
    custom_divergences.check(div)  # f(1) = 0, convex, OPD+ unbiased by enumeration


def _config(divergence):
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    cfg["variants"] = [{"divergence": divergence, "design": "opd_plus", "name": "mine"}]
    return cfg


def test_a_valid_custom_divergence_passes_validation():
    assert validate(_config("custom:user_divergences:forward_kl_again"))["variants"][0]["name"] == "mine"


@pytest.mark.parametrize("fn, match", [
    ("concave", r"fails the check 'convex in u'"),
    ("shifted", r"fails the check f\(1\) = 0: f\(1\) = 1"),
    ("not_differentiable", r"fails the check 'OPD\+ unbiased by exact enumeration'"),
    ("not_elementwise", r"f must map a tensor of log u to a tensor of the same shape"),
    ("missing", r"'user_divergences' has no function 'missing'"),
])
def test_a_custom_divergence_that_fails_a_check_is_refused_naming_the_check(fn, match):
    with pytest.raises(ConfigError, match=r"variants.0.divergence: .*" + match):
        validate(_config(f"custom:user_divergences:{fn}"))


def test_an_unimportable_module_is_named():
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_module'"):
        validate(_config("custom:no_such_module:f"))
