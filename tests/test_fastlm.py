"""The fast path (opdpipe.fastlm) against the reference transformers path: same sampled tokens for the
same seed, log-probs and gradients within float rounding, and the models it must leave alone. Every
test runs twice: with the fast path's matmuls on MKL (opdpipe.onednn disabled) and with all of them
on oneDNN (its size threshold at 0, since these test models are smaller than it; on any CPU, as if it
were one that takes it)."""
import pytest
import torch

from opdpipe import fastlm, onednn
from opdpipe.generation import sample
from opdpipe.models import build_model
from opdpipe.scoring import sequence_logprobs, teacher_logprobs
from opdpipe.tokenizer import build_char_tokenizer

SPEC = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 128}


@pytest.fixture(autouse=True, params=["mkl", "onednn"])
def gemm(request, monkeypatch):
    if request.param == "onednn":
        monkeypatch.setattr(onednn, "_ON_THIS_CPU", True)
        assert onednn.available()
        monkeypatch.setattr(onednn, "MIN_MACS", 0)
        yield
    else:
        with onednn.disabled():
            yield


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    student, teacher = build_model(SPEC, tok, 0).eval(), build_model({**SPEC, "hidden_size": 48}, tok, 1).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # norm weights other than 1 (as trained models have): the fast path folds them in
        for model in (student, teacher):
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5, generator=gen)
    prompts = [torch.randint(3, len(tok), (5 + 3 * i,), generator=gen).tolist() for i in range(5)]
    ctx = [p for p in prompts for _ in range(4)]  # G = 4 rollouts per prompt, prompts of different lengths
    return tok, student, teacher, ctx


def both(fn):
    fast = fn()
    with fastlm.disabled():
        ref = fn()
    return fast, ref


@pytest.mark.parametrize("greedy", [False, True])
def test_rollouts_draw_the_same_tokens(world, greedy):
    tok, student, _, ctx = world
    eos = tok.eos_token_id
    for _ in range(2):  # then the most frequent token as "EOS", so rows stop at different lengths
        fast, ref = both(lambda: sample(student, ctx, 24, eos, tok.pad_token_id, greedy=greedy,
                                        generator=torch.Generator().manual_seed(3)))
        eos = int(ref.response[:, 1:].flatten().mode().values)
        assert torch.equal(fast.response, ref.response) and torch.equal(fast.mask, ref.mask)
        assert torch.equal(fast.truncated, ref.truncated)
        assert (fast.logprobs - ref.logprobs).abs().max() < 1e-5
    assert fast.mask.sum(-1).unique().numel() > 1  # the EOS case really ends rows at different lengths


def test_scoring_matches_the_reference_with_privileged_contexts(world):
    tok, student, teacher, ctx = world
    roll = sample(student, ctx, 20, 7, tok.pad_token_id, generator=torch.Generator().manual_seed(5))
    t_ctx = [[11, 12, 13] + c for c in ctx]  # the teacher sees more than the student
    for model, c in ((student, ctx), (teacher, t_ctx)):
        fast, ref = both(lambda: teacher_logprobs(model, c, roll.response, roll.mask, tok.pad_token_id))
        assert (fast - ref).abs().max() < 1e-5
        assert fast[roll.mask == 0].abs().max() == 0


def test_gradients_match_the_reference(world):
    tok, student, _, ctx = world
    roll = sample(student, ctx, 20, 7, tok.pad_token_id, generator=torch.Generator().manual_seed(6))
    adv = torch.randn(roll.response.shape, generator=torch.Generator().manual_seed(1))

    def grads():
        student.zero_grad(set_to_none=True)
        (sequence_logprobs(student, ctx, roll.response, roll.mask, tok.pad_token_id) * adv).sum().backward()
        return {n: p.grad.clone() for n, p in student.named_parameters()}

    fast, ref = both(grads)
    student.zero_grad(set_to_none=True)
    for name in ref:
        scale = ref[name].abs().max().clamp_min(1e-12)
        assert (fast[name] - ref[name]).abs().max() / scale < 1e-5, name


def test_rows_not_grouped_by_context_match_the_reference(world):
    """Contexts interleaved (a, b, a, b, ...) and one seen once: each row gets its own copy of the
    prompt's keys and values (index_select) instead of a shared one; draws, log-probs and gradients
    as in the reference path."""
    tok, student, _, ctx = world
    rows = ctx[::4] * 3 + [ctx[-1] + [5]]
    fast, ref = both(lambda: sample(student, rows, 12, 7, tok.pad_token_id, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(fast.response, ref.response) and (fast.logprobs - ref.logprobs).abs().max() < 1e-5

    def grads():
        student.zero_grad(set_to_none=True)
        lp = sequence_logprobs(student, rows, ref.response, ref.mask, tok.pad_token_id)
        lp.sum().backward()
        return lp.detach(), [p.grad.clone() for p in student.parameters()]
    (lp_fast, g_fast), (lp_ref, g_ref) = both(grads)
    student.zero_grad(set_to_none=True)
    assert (lp_fast - lp_ref).abs().max() < 1e-5
    assert all((a - b).abs().max() / b.abs().max().clamp_min(1e-12) < 1e-5 for a, b in zip(g_fast, g_ref))


def test_sft_logits_match_the_reference_on_right_padded_rows(world):
    """fastlm.logits (train_sft's forward on the embedded models): transformers' logits and gradients."""
    tok, student, _, _ = world
    ids = torch.randint(3, len(tok), (3, 12), generator=torch.Generator().manual_seed(0))
    attn = (torch.arange(12)[None] < torch.tensor([[12], [7], [3]])).long()  # right padding
    keep = attn.bool()

    def loss_and_grads():
        student.zero_grad(set_to_none=True)
        out = fastlm.logits(student, ids, attn) if fastlm.supports(student) else \
            student(input_ids=ids, attention_mask=attn).logits
        out[keep].logsumexp(-1).sum().backward()
        return out.detach()[keep], [p.grad.clone() for p in student.parameters()]
    (fast, g_fast), (ref, g_ref) = both(loss_and_grads)
    assert (fast - ref).abs().max() < 1e-5
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(g_fast, g_ref))
    student.zero_grad(set_to_none=True)


def test_distinct_contexts_keep_first_seen_order():
    uniq, rows = fastlm.distinct([[1, 2], [1, 2], [3], [1, 2], [3]])
    assert uniq == [[1, 2], [3]] and rows.tolist() == [0, 0, 1, 0, 1]


def test_a_one_token_response_is_scored_like_the_reference(world):
    tok, student, _, ctx = world
    roll = sample(student, ctx, 1, tok.eos_token_id, tok.pad_token_id, generator=torch.Generator().manual_seed(2))
    assert roll.response.shape[1] == 1
    fast, ref = both(lambda: teacher_logprobs(student, ctx, roll.response, roll.mask, tok.pad_token_id))
    assert (fast - ref).abs().max() < 1e-5


def test_decoding_runs_no_step_after_the_last_draw():
    from opdpipe.generation import decode

    calls = []

    def step(tok, t):
        calls.append(t)
        return torch.zeros(2, 5)

    r = decode([[1], [1]], torch.zeros(2, 5), step, 4, eos_id=9, pad_id=0, greedy=True, generator=None)
    assert r.response.shape == (2, 4) and calls == [0, 1, 2] and r.truncated.all()


def test_decoding_pads_each_row_after_its_first_eos():
    from opdpipe.generation import decode

    # greedy draws from fixed logits: row 0 draws EOS (9) at t = 1, row 1 at t = 3, row 2 never; token 4 else
    script = [[4, 4, 4], [9, 4, 4], [4, 4, 4], [9, 9, 4]]
    fed = []

    def logits_at(t):
        out = torch.full((3, 10), -5.0)
        out[torch.arange(3), torch.tensor(script[t])] = 0.0
        return out

    def step(tok, t):
        fed.append(tok.tolist())
        return logits_at(t + 1)

    r = decode([[1]] * 3, logits_at(0), step, 4, eos_id=9, pad_id=0, greedy=True, generator=None)
    assert r.response.tolist() == [[4, 9, 0, 0], [4, 4, 4, 9], [4, 4, 4, 4]]
    assert r.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert r.truncated.tolist() == [False, False, True]
    assert (r.logprobs[r.mask == 0] == 0).all() and (r.logprobs[r.mask == 1] < 0).all()
    assert fed == [[4, 4, 4], [9, 4, 4], [4, 4, 4]]  # a finished row keeps drawing (the generator is consumed alike)


def _with_config(**changes):
    def make(tok):
        m = build_model(SPEC, tok, 0)
        for k, v in changes.items():
            setattr(m.config, k, v)
        return m
    return make


def _lora(tok):
    from peft import LoraConfig, get_peft_model
    return get_peft_model(build_model(SPEC, tok, 0), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))


def _checkpointed(tok):
    m = build_model(SPEC, tok, 0)
    (getattr(m, "activation_checkpointing_enable", None) or m.gradient_checkpointing_enable)()  # < 5.24: the old name
    return m


def _ddp_like(tok):
    wrapped = torch.nn.Module()
    wrapped.module = build_model(SPEC, tok, 0)  # e.g. a DDP wrapper: its forward must run, for the gradient all-reduce
    return wrapped


def _qwen(tok):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, head_dim=16))


UNCOVERED = {"grouped-query attention": _with_config(num_key_value_heads=2),
             "attention bias": _with_config(attention_bias=True), "mlp bias": _with_config(mlp_bias=True),
             "gelu": _with_config(hidden_act="gelu"), "tensor-parallel slices": _with_config(pretraining_tp=2),
             "scaled rotary positions": _with_config(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                      "rope_theta": 10000.0}),
             "head_dim apart from hidden / heads": _with_config(head_dim=16),
             "attention dropout": _with_config(attention_dropout=0.1),
             "bfloat16 weights": lambda tok: build_model(SPEC, tok, 0).to(torch.bfloat16),
             "gradient checkpointing": _checkpointed, "LoRA wrapper": _lora, "DDP-like wrapper": _ddp_like,
             "another architecture": _qwen}


def test_the_embedded_models_take_the_fast_path_unless_disabled(world):
    tok, student, _, _ = world
    assert fastlm.supports(student)
    with fastlm.disabled():
        assert not fastlm.supports(student)
    assert fastlm.supports(student)


def test_a_bfloat16_model_is_scored_on_the_reference_path(world):
    tok, _, _, ctx = world
    model = build_model(SPEC, tok, 0).to(torch.bfloat16)
    response, mask = torch.full((len(ctx), 3), 5), torch.ones(len(ctx), 3, dtype=torch.long)
    lp = teacher_logprobs(model, ctx, response, mask, tok.pad_token_id)
    assert lp.shape == (len(ctx), 3) and torch.isfinite(lp).all() and (lp < 0).all()


@pytest.mark.parametrize("case", list(UNCOVERED))
def test_models_it_does_not_cover_take_the_reference_path(world, case):
    tok = world[0]
    assert not fastlm.supports(UNCOVERED[case](tok)), case
