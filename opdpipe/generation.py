"""Batched autoregressive sampling with a KV cache.

Training rollouts must be samples from the student itself: temperature 1, no top-k/top-p, so
this module offers exactly two modes, plain sampling and greedy decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from opdpipe import fastlm


@dataclass
class Rollout:
    prompt_ids: list[list[int]]
    response: torch.Tensor  # [B, T] sampled ids, pad after EOS
    mask: torch.Tensor  # [B, T] 1 for response tokens (EOS included), 0 for padding
    logprobs: torch.Tensor  # [B, T] behaviour log-probs of the sampled tokens
    truncated: torch.Tensor  # [B] True when no EOS within max_new_tokens


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    return ids, mask


def pick_tokens(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None):
    """The next token of each row ([B, V] logits): argmax, or a draw at temperature 1; and its log-prob."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, V]
    if greedy:
        tok = logp.argmax(-1)
    else:
        tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def decode(prompt_ids, logits: torch.Tensor, step, max_new_tokens: int, eos_id: int, pad_id: int, greedy: bool,
           generator: torch.Generator | None) -> Rollout:
    """The sampling loop both paths share: draw from `logits` [B, V], then `step(tokens, t)` gives the
    next position's logits, until every row has drawn EOS or the budget is spent. Rows that are done
    keep drawing (every row consumes the generator alike); their later draws are replaced by padding
    once, at the end (what a finished row is fed never reaches another row)."""
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    tokens, logps = [], []
    for t in range(max_new_tokens):
        tok, tok_lp = pick_tokens(logits, greedy, generator)
        tokens.append(tok)
        logps.append(tok_lp)
        done |= tok == eos_id
        if t == max_new_tokens - 1 or done.all():  # no step after the last draw
            break
        logits = step(tok, t)
    drawn = torch.stack(tokens, dim=1)
    eos = (drawn == eos_id).long()
    mask = (torch.cumsum(eos, dim=1) - eos == 0).long()  # a response token: no EOS strictly before it
    keep = mask.bool()
    return Rollout(prompt_ids, torch.where(keep, drawn, pad_id), mask, torch.where(keep, torch.stack(logps, dim=1), 0.0),
                   ~done)


@torch.no_grad()
def sample(model, prompt_ids: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int,
           greedy: bool = False, generator: torch.Generator | None = None) -> Rollout:
    """Sample (or greedily decode) continuations of left-padded prompts until EOS or the budget.

    The embedded models take the fast path (opdpipe.fastlm: the same draws, one prefill per distinct
    prompt); any other model runs through transformers with its KV cache."""
    if fastlm.supports(model):
        return fastlm.sample(model, prompt_ids, max_new_tokens, eos_id, pad_id, greedy, generator)
    dev = next(model.parameters()).device  # the model's device (a no-op move on the CPU)
    ids, attn = (t.to(dev) for t in left_pad(prompt_ids, pad_id))
    B = ids.shape[0]
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
    cache_key = "cache" if hasattr(out, "cache") else "past_key_values"  # transformers 5.24 | < 5.20 (vLLM extra)
    state = {"past": getattr(out, cache_key), "attn": attn, "pos": pos[:, -1] + 1}

    def step(tok: torch.Tensor, t: int) -> torch.Tensor:
        state["attn"] = torch.cat([state["attn"], torch.ones(B, 1, dtype=attn.dtype, device=dev)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=state["attn"], position_ids=state["pos"][:, None],
                    use_cache=True, **{cache_key: state["past"]})
        state["past"], state["pos"] = getattr(out, cache_key), state["pos"] + 1
        return out.logits[:, -1]

    return decode(prompt_ids, out.logits[:, -1], step, max_new_tokens, eos_id, pad_id, greedy, generator)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Response texts: the masked tokens, EOS dropped."""
    keep = rollout.mask.bool() & (rollout.response != tokenizer.eos_token_id)
    rows = torch.where(keep, rollout.response, -1).tolist()
    return tokenizer.batch_decode([[t for t in row if t >= 0] for row in rows])


def greedy_accuracy(model, tokenizer, examples: list[dict], score, max_new_tokens: int,
                    batch_size: int = 128, encode=None) -> tuple[float, list[str]]:
    """Greedy-decoding accuracy of `model` on `examples` with the task's `score` function.

    encode: texts -> token ids (opdpipe.backends.chat.encode_prompts with a chat template); by default
    each prompt is tokenized as it is."""
    outputs = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        prompts = encode([e["prompt"] for e in chunk]) if encode else \
            [tokenizer(e["prompt"])["input_ids"] for e in chunk]
        r = sample(model, prompts, max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id, greedy=True)
        outputs.extend(decode_responses(tokenizer, r))
    correct = [score(o, e["answer"]) for o, e in zip(outputs, examples)]
    return sum(correct) / max(len(correct), 1), outputs
