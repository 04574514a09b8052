"""Packed passes (opdpipe.fastlm): the teacher's scoring, the update's forward and the SFT loss run the
layers' position-wise work on a batch's tokens alone, leaving the padding out. They must give what the
same fast path gives over every padded position (fastlm.every_position) and what transformers gives:
log-probs and losses within float rounding, every gradient within 1e-5 of the largest, and exact
zeros where a row has no token."""
import contextlib

import pytest
import torch

from opdpipe import fastlm
from opdpipe.generation import sample
from opdpipe.models import build_model
from opdpipe.scoring import sequence_logprobs, teacher_logprobs
from opdpipe.sft import collate, loss
from opdpipe.tokenizer import build_char_tokenizer

SPEC = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 128}
PATHS = {"packed": contextlib.nullcontext, "every position": fastlm.every_position,
         "transformers": fastlm.disabled}


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    model = build_model(SPEC, tok, 0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # norm weights other than 1, as trained models have
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5, generator=gen)
    return tok, model, gen


def rollout(tok, gen, lengths: list[int], T: int):
    """Prompts (G = 2 rows each, of different lengths) and responses of the given token counts, padded."""
    distinct = [torch.randint(3, len(tok), (4 + 3 * i,), generator=gen).tolist() for i in range(len(lengths) // 2)]
    prompts = [p for p in distinct for _ in range(2)]
    response = torch.randint(3, len(tok), (len(lengths), T), generator=gen)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return prompts, torch.where(mask.bool(), response, tok.pad_token_id), mask


def each_path(model, fn):
    out = {}
    for name, block in PATHS.items():
        model.zero_grad(set_to_none=True)
        with block():
            value = fn()
            value.backward(torch.linspace(0.5, 2.0, value.numel()).view_as(value))
        out[name] = (value.detach(), [p.grad.clone() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return out


def assert_close(out, tol=1e-5):
    (v, g), *rest = out.values()
    for name, (w, h) in zip(list(out)[1:], rest):
        assert (v - w).abs().max() <= tol, name
        assert all((a - b).abs().max() <= tol * b.abs().max().clamp_min(1e-12) for a, b in zip(g, h)), name


@pytest.mark.parametrize("lengths", [[9, 1, 4, 9, 2, 7], [1, 1, 1, 1], [9, 9, 9, 9]])
def test_response_log_probs_leave_the_padding_out_and_change_nothing(world, lengths):
    tok, model, gen = world
    prompts, response, mask = rollout(tok, gen, lengths, 9)
    out = each_path(model, lambda: sequence_logprobs(model, prompts, response, mask, tok.pad_token_id))
    assert_close(out)
    packed = out["packed"][0]
    assert torch.equal(packed[mask == 0], torch.zeros(int((mask == 0).sum())))
    assert (packed[mask == 1] < 0).all()


def test_a_one_position_response_is_packed_too(world):
    tok, model, gen = world
    prompts, response, mask = rollout(tok, gen, [1, 1, 1, 1], 1)
    values = {}
    for name, block in PATHS.items():
        with block():
            values[name] = teacher_logprobs(model, prompts, response, mask, tok.pad_token_id)
    assert (values["packed"] - values["transformers"]).abs().max() < 1e-5
    assert torch.equal(values["packed"], values["every position"])


@pytest.mark.parametrize("smoothing", [0.0, 0.06])
def test_the_sft_loss_leaves_the_padding_out_and_changes_nothing(world, smoothing):
    tok, model, gen = world
    rows = []
    for n_prompt, n_answer in [(5, 9), (3, 2), (8, 1), (4, 6)]:  # right padding to 14, prompts not learned
        ids = torch.randint(3, len(tok), (n_prompt + n_answer,), generator=gen).tolist()
        rows.append((ids, [False] * n_prompt + [True] * n_answer))
    ids, attn, labels = collate(rows, tok.pad_token_id)
    assert (attn == 0).any()
    out = each_path(model, lambda: loss(model, ids, attn, labels, smoothing)[None])
    assert_close(out)


def test_packing_places_every_kept_position_back_and_zeros_the_rest():
    keep = torch.tensor([[True, True, False], [True, False, False]])
    x = torch.arange(6.0).view(2, 3, 1).requires_grad_()
    packed = fastlm._Packed.of(keep)
    picked = packed.pick(x)
    assert picked.flatten().tolist() == [0.0, 1.0, 3.0]
    back = packed.spread(picked * 10)
    assert back.flatten().tolist() == [0.0, 10.0, 0.0, 30.0, 0.0, 0.0]
    back.sum().backward()
    assert x.grad.flatten().tolist() == [10.0, 10.0, 0.0, 10.0, 0.0, 0.0]


def test_the_layers_run_on_the_tokens_alone(world, monkeypatch):
    """Every projection sees the tokens alone: each distinct prompt's (the prefill), then the N kept
    response inputs, then the head the N' response tokens; never a padded [B, L] layout."""
    tok, model, gen = world
    prompts, response, mask = rollout(tok, gen, [9, 1, 4, 9, 2, 7], 9)
    rows, real = [], fastlm.linear
    monkeypatch.setattr(fastlm, "linear", lambda x, w: rows.append(tuple(x.shape[:-1])) or real(x, w))
    teacher_logprobs(model, prompts, response, mask, tok.pad_token_id)
    per_pass = 4 * SPEC["num_hidden_layers"]
    prompt_tokens = sum(len(p) for p in prompts[::2])  # G = 2 rows per prompt
    assert len(prompts[0]) != len(prompts[-1]) and len(rows) == 2 * per_pass + 1
    assert set(rows[:per_pass]) == {(prompt_tokens,)}
    assert set(rows[per_pass:-1]) == {(int(mask[:, 1:].sum()),)} and rows[-1] == (int(mask.sum()),)


def test_the_sft_layers_run_on_the_tokens_alone_and_the_head_where_a_token_is_learned(world, monkeypatch):
    tok, model, gen = world
    rows = [(list(range(3, 3 + n)), [False] * 3 + [True] * (n - 3)) for n in (12, 5, 8)]
    ids, attn, labels = collate(rows, tok.pad_token_id)
    shapes, real = [], fastlm.linear
    monkeypatch.setattr(fastlm, "linear", lambda x, w: shapes.append(x.shape[:-1]) or real(x, w))
    loss(model, ids, attn, labels)
    assert set(shapes[:-1]) == {(12 + 5 + 8,)} and shapes[-1] == (int((labels[:, 1:] != -100).sum()),)


def test_rollouts_over_packed_prompts_draw_the_same_tokens(world):
    tok, model, gen = world
    prompts, _, _ = rollout(tok, gen, [1] * 6, 1)  # prompts of three lengths, left-padded in the prefill
    draws = {}
    for name, block in PATHS.items():
        with block():
            draws[name] = sample(model, prompts, 12, tok.eos_token_id, tok.pad_token_id,
                                 generator=torch.Generator().manual_seed(5))
    for name in ("every position", "transformers"):
        assert torch.equal(draws["packed"].response, draws[name].response), name
        assert (draws["packed"].logprobs - draws[name].logprobs).abs().max() < 1e-5, name
