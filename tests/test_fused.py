"""opdpipe.fused: each Function gives its composite's values and gradients bit for bit, and the SFT
logits of right-padded rows (the causal flag, no padding mask) are the masked pass's, bit for bit."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

from opdpipe import fastlm, fused
from opdpipe.models import build_model
from opdpipe.sft import collate
from opdpipe.tokenizer import build_char_tokenizer


def composite_swiglu(gate_up):
    g, u = gate_up.chunk(2, dim=-1)
    return F.silu(g) * u


def composite_heads(h, rot, n_heads):
    B, L = h.shape[:2]
    qkv = h.view(B, L, 3, n_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = fused.rotate(qkv[:2], rot).unbind(0)
    return q, k, qkv[2]


def values_and_grads(fn, *weights):
    """fn's outputs and the gradients of every weight, for a fixed non-uniform output gradient."""
    for w in weights:
        w.grad = None
    outs = fn()
    outs = outs if isinstance(outs, tuple) else (outs,)
    gen = torch.Generator().manual_seed(1)
    torch.autograd.backward(outs, [torch.randn(o.shape, generator=gen) for o in outs])
    return [o.detach().clone() for o in outs] + [w.grad.clone() for w in weights]


def assert_bit_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.stride() == y.stride() and torch.equal(x, y)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_swiglu_gives_the_composites_values_and_gradients(gen):
    x = torch.randn(5, 7, 24, generator=gen, requires_grad=True)
    w = torch.randn(2 * 40, 24, generator=gen, requires_grad=True)
    down = torch.randn(24, 40, generator=gen, requires_grad=True)
    for_ = lambda f: (lambda: F.linear(f(F.linear(x, w)), down))  # noqa: E731
    assert_bit_equal(values_and_grads(for_(fused.swiglu), x, w, down),
                     values_and_grads(for_(composite_swiglu), x, w, down))
    with torch.no_grad():  # no gradient: the composite itself, no Function
        y = fused.swiglu(F.linear(x, w))
    assert y.grad_fn is None and torch.equal(y, composite_swiglu(F.linear(x, w)).detach())


@pytest.mark.parametrize("packed", [False, True])
def test_split_heads_gives_the_composites_values_and_gradients(gen, packed):
    B, L, H, d = 3, 6, 2, 8
    x = torch.randn(B, L, 16, generator=gen, requires_grad=True)
    w = torch.randn(3 * H * d, 16, generator=gen, requires_grad=True)
    rot = torch.polar(torch.ones(B, 1, L, d // 2), torch.rand(B, 1, L, d // 2, generator=gen) * 6)
    keep = torch.rand(B, L, generator=gen) > 0.3
    spread = fastlm._Packed.of(keep)

    def run(split):
        def fn():
            h = spread.spread(F.linear(spread.pick(x), w)) if packed else F.linear(x, w)
            q, k, v = split(h, rot, H)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True) * 1.5, k, v
        return fn
    assert_bit_equal(values_and_grads(run(fused.split_heads), x, w), values_and_grads(run(composite_heads), x, w))
    with torch.no_grad():
        q, k, v = fused.split_heads(F.linear(x, w), rot, H)
    assert all(t.grad_fn is None for t in (q, k, v))


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    spec = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "max_position_embeddings": 128}
    return tok, build_model(spec, tok, 0)


def sft_batch(tok, lengths, gen):
    rows = [(torch.randint(3, len(tok), (n,), generator=gen).tolist(), [True] * n) for n in lengths]
    return collate(rows, tok.pad_token_id)


@pytest.mark.parametrize("block", [fastlm.every_position, contextlib.nullcontext], ids=["every position", "packed"])
def test_right_padded_sft_logits_take_the_causal_flag_and_change_no_bit(model, gen, block):
    """At the read positions, the causal flag alone (every row right-padded) gives the padding-masked
    pass's logits and gradients exactly, packed or over every position."""
    tok, m = model
    ids, attn, _ = sft_batch(tok, [11, 4, 8, 1], gen)
    at = attn.bool()
    assert fastlm._right_padded(attn) and (attn == 0).any()
    params = list(m.parameters())
    with block():
        causal = values_and_grads(lambda: fastlm.logits(m, ids, attn, at), *params)
        masked = values_and_grads(lambda: fastlm.logits(m, ids, attn)[at], *params)
    if block is fastlm.every_position:  # the same [B, L] layout both ways: the same bits
        assert_bit_equal(causal, masked)
    else:  # packed against every position: float rounding (tests/test_packing.py)
        assert all((a - b).abs().max() <= 1e-5 * b.abs().max() for a, b in zip(causal, masked))


def test_rows_not_right_padded_keep_the_padding_mask(model, gen, monkeypatch):
    tok, m = model
    ids, attn, _ = sft_batch(tok, [6, 3, 5], gen)
    left_ids, left_attn = ids.flip(1), attn.flip(1)  # left padding: a causal flag would attend it
    assert not fastlm._right_padded(left_attn)
    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **kw: seen.append(kw["attn_mask"] is not None) or real(*a, **kw))
    with fastlm.every_position(), torch.no_grad():
        out = fastlm.logits(m, left_ids, left_attn, left_attn.bool())
        full = fastlm.logits(m, left_ids, left_attn)[left_attn.bool()]
    assert seen and all(seen) and torch.equal(out, full)
