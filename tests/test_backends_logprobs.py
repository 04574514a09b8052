"""Chunked sampled-token log-probs equal the plain [B, T, V] computation (float32, 1e-5)."""
import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from opdpipe.scoring import sequence_logprobs

VOCAB = 5000  # thousands of tokens: the log-softmax normaliser is a real sum


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=128,
                      tie_word_embeddings=False, pad_token_id=0, eos_token_id=1)
    return AutoModelForCausalLM.from_config(cfg).eval()


def _batch(seed=0, B=5, T=23):
    g = torch.Generator().manual_seed(seed)
    ctx = [torch.randint(2, VOCAB, (n,), generator=g).tolist() for n in (3, 9, 1, 6, 12)[:B]]
    resp = torch.randint(2, VOCAB, (B, T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor([T, 7, 15, 1, 20])[:B, None]).long()
    return ctx, resp, mask


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 64])
def test_chunked_logprobs_equal_the_plain_ones(chunk):
    model, (ctx, resp, mask) = _model(), _batch()
    with torch.no_grad():
        plain = sequence_logprobs(model, ctx, resp, mask, 0)
        chunked = sequence_logprobs(model, ctx, resp, mask, 0, chunk=chunk)
    assert plain.dtype == chunked.dtype == torch.float32
    assert (plain != 0).sum() == mask.sum()  # real values at every response position
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=0)


def test_chunked_gradients_equal_the_plain_ones():
    model, (ctx, resp, mask) = _model(1), _batch(1)
    grads = []
    for chunk in (0, 5):
        model.zero_grad()
        lp = sequence_logprobs(model, ctx, resp, mask, 0, chunk=chunk)
        (lp.sum() / mask.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4, msg=n)


def test_a_nonpositive_chunk_is_refused():
    from opdpipe.backends.logprobs import chunked_token_logprobs

    with pytest.raises(ValueError, match="chunk = -1"):
        chunked_token_logprobs(torch.nn.Linear(4, 8), torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long), -1)
