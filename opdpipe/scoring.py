"""Sampled-token log-probabilities of a response under a causal LM, aligned by construction.

Each row is laid out as ``[left-padded context | response]``, so every response occupies the last
T positions and the logit that predicts response token t sits at position ``P - 1 + t``. Only the
T logit rows that predict response tokens are computed (``logits_to_keep``); the full
``[B, P+T, V]`` tensor is never formed, which keeps the path valid for 150k-token vocabularies.
Student and teacher may see different contexts (e.g. privileged information for the teacher):
each gets its own left-padded context, and the response positions still line up.
"""
from __future__ import annotations

import torch

from opdpipe import fastlm
from opdpipe.backends.logprobs import response_logprobs_chunked
from opdpipe.generation import left_pad


def _layout(context_ids, response, response_mask, pad_id):
    """Input ids, attention mask and position ids [B, P+T] of [left-padded context | response] rows."""
    ctx, ctx_mask = left_pad(context_ids, pad_id)
    ctx, ctx_mask = ctx.to(response.device), ctx_mask.to(response.device)
    ids = torch.cat([ctx, torch.where(response_mask.bool(), response, torch.full_like(response, pad_id))], dim=1)
    attn = torch.cat([ctx_mask, torch.ones_like(response_mask, dtype=ctx_mask.dtype)], dim=1)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    return ids, attn, pos


def response_logits(model, context_ids: list[list[int]], response: torch.Tensor, response_mask: torch.Tensor,
                    pad_id: int) -> torch.Tensor:
    """Logits [B, T, V] that predict each response token given its context and earlier tokens (the
    embedded models through opdpipe.fastlm, each distinct context once)."""
    if fastlm.supports(model):
        return fastlm.response_logits(model, context_ids, response, response_mask, pad_id)
    ids, attn, pos = _layout(context_ids, response, response_mask, pad_id)
    T = response.shape[1]
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=T + 1)
    return out.logits[:, :T].float()  # position P-1+t predicts response token t


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] without materialising the full log-softmax. [B, T, V] -> [B, T]."""
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def sequence_logprobs(model, context_ids, response, response_mask, pad_id, chunk: int = 0) -> torch.Tensor:
    """Sampled-token log-probs [B, T] (zero at masked positions); gradients flow if enabled.

    chunk = 0: one [B, T, V] float32 logits tensor (the embedded default's path); chunk > 0: the
    output head and log-softmax run `chunk` response positions at a time (opdpipe.backends.logprobs)."""
    if chunk:
        lp = response_logprobs_chunked(model, *_layout(context_ids, response, response_mask, pad_id), response, chunk)
    elif fastlm.supports(model):  # the embedded models: one pass per distinct context (opdpipe.fastlm)
        lp = fastlm.response_logprobs(model, context_ids, response, response_mask, pad_id)
    else:
        lp = token_logprobs(response_logits(model, context_ids, response, response_mask, pad_id), response)
    return lp * response_mask


@torch.no_grad()
def teacher_logprobs(teacher, context_ids, response, response_mask, pad_id, chunk: int = 0) -> torch.Tensor:
    """One batched no-grad forward pass of the frozen teacher: [B, T] sampled-token log-probs."""
    return sequence_logprobs(teacher, context_ids, response, response_mask, pad_id, chunk)
