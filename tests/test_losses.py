"""Policy loss and advantage assembly: REINFORCE equivalence, masking, aggregation, errors."""
import pytest
import torch

from opdpipe.advantages import compute_advantages, discounted_future, get_design
from opdpipe.losses import aggregate, policy_loss


def _batch(seed=0, B=4, T=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, generator=g, dtype=torch.float64, requires_grad=True)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, :] = False  # a fully masked row
    return logits, adv, mask


def test_gradient_at_theta_old_equals_reinforce():
    lp, adv, mask = _batch()
    loss, _ = policy_loss(lp, lp.detach(), adv, mask, agg="token_mean")
    (g,) = torch.autograd.grad(loss, lp)
    expected = -(adv * mask) / mask.sum()  # grad of -mean(A * lp) over unmasked tokens
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-12)


def test_masked_positions_never_contribute_and_empty_rows_give_no_nan():
    lp, adv, mask = _batch()
    adv_garbage, lp_old = adv.clone(), lp.detach().clone()
    adv_garbage[~mask] = float("nan")
    lp_old[~mask] = 1e6
    for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum"):
        loss_clean, _ = policy_loss(lp, lp.detach(), adv, mask, agg=agg)
        loss, _ = policy_loss(lp, lp_old, adv_garbage, mask, agg=agg)
        (g,) = torch.autograd.grad(loss, lp)
        (g_clean,) = torch.autograd.grad(loss_clean, lp)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
        torch.testing.assert_close(g, g_clean)
        assert (g[~mask] == 0).all()
    all_masked = torch.zeros_like(mask)
    loss, _ = policy_loss(lp, lp.detach(), adv, all_masked)
    assert loss.item() == 0.0


def test_aggregation_modes_by_hand():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(v, m, "token_mean").item() == pytest.approx(10 / 4)
    assert aggregate(v, m, "seq_mean_token_mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(v, m, "seq_mean_token_sum").item() == pytest.approx((6 + 4) / 2)
    with pytest.raises(KeyError, match="unknown aggregation 'sum'.*token_mean"):
        aggregate(v, m, "sum")


def test_ratio_clipping_is_off_by_default_and_limits_the_update():
    lp_old = torch.zeros(1, 2, dtype=torch.float64)
    lp_new = torch.tensor([[0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 2)
    loss, metrics = policy_loss(lp_new, lp_old, adv, mask)
    assert metrics["loss/ratio_clip_frac"] == 0.0
    (g,) = torch.autograd.grad(loss, lp_new)
    assert (g != 0).all()
    loss_c, metrics_c = policy_loss(lp_new, lp_old, adv, mask, clip_ratio=0.2)
    (gc,) = torch.autograd.grad(loss_c, lp_new)
    assert metrics_c["loss/ratio_clip_frac"] == 1.0 and (gc == 0).all()  # both ratios beyond the trust region


def test_policy_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"share one \[B, T\] shape"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))


def test_discounted_future_by_hand():
    r = torch.tensor([[1.0, 2.0, 4.0]])
    torch.testing.assert_close(discounted_future(r, 0.5), torch.tensor([[0.5 * 2 + 0.25 * 4, 0.5 * 4, 0.0]]))
    torch.testing.assert_close(discounted_future(r, 0.0), torch.zeros_like(r))


def test_advantages_gamma_one_adds_reward_to_go_and_respect_mask():
    log_u = torch.tensor([[0.1, -0.2, 0.3, 9.9]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, stats = compute_advantages("opd_plus", "reverse_kl", log_u, mask, gamma=1.0)
    # reverse KL: w = ln u - 1, reward -f = ln u; masked 4th token contributes nothing
    expected = torch.tensor([[0.1 - 1 + (-0.2 + 0.3), -0.2 - 1 + 0.3, 0.3 - 1, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(adv, expected)
    assert stats["adv/max"] == pytest.approx(expected[0, :3].max().item())


def test_advantage_errors():
    with pytest.raises(KeyError, match="unknown advantage design 'grpo'.*opd, opd_plus"):
        get_design("grpo")
    with pytest.raises(ValueError, match="gamma must be in"):
        compute_advantages("opd", "jsd", torch.zeros(1, 2), torch.ones(1, 2), gamma=1.5)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        compute_advantages("opd", "jsd", torch.zeros(1, 2), torch.ones(1, 3))
    with pytest.raises(KeyError, match="unknown divergence"):
        compute_advantages("opd", "kl", torch.zeros(1, 2), torch.ones(1, 2))
