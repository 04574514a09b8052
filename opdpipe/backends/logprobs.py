"""Sampled-token log-probabilities computed one slice of the response at a time.

The plain path (``opdpipe.scoring``) asks the model for the ``[B, T, V]`` logits of the response
positions and takes ``log_softmax`` of them in float32: at a 151k vocabulary and 8k tokens that
tensor alone is tens of GB. Here the decoder body runs once, giving hidden states ``[B, T, H]``,
and the output head, the float32 upcast, the log-softmax and the gather run per slice of
``chunk`` positions, so at most ``[B, chunk, V]`` logits exist at a time. With gradients enabled
each slice is recomputed in the backward pass (activation checkpointing), so the slices' logits
are not kept for it either.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _body_and_head(model):
    """The decoder body and the output head of a causal LM (through a peft wrapper if any)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "final_logit_softcapping", None):
        raise NotImplementedError(f"{type(base).__name__}: chunked log-probs do not apply logit soft-capping; "
                                  "set opd.logprob_chunk = 0")
    return base.get_decoder(), base.get_output_embeddings()


def _slice_logprobs(head, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[B, c, H] hidden states, [B, c] tokens -> [B, c] log-probs (float32)."""
    logits = head(hidden).float()  # [B, c, V]
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def chunked_token_logprobs(head, hidden: torch.Tensor, tokens: torch.Tensor, chunk: int) -> torch.Tensor:
    """log softmax(head(hidden))[tokens], `chunk` positions at a time. [B, T, H], [B, T] -> [B, T]."""
    if chunk < 1:
        raise ValueError(f"chunk = {chunk!r}: must be a positive number of positions")
    out = []
    for s in range(0, tokens.shape[1], chunk):
        h, t = hidden[:, s:s + chunk], tokens[:, s:s + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            out.append(checkpoint(_slice_logprobs, head, h, t, use_reentrant=False))
        else:
            out.append(_slice_logprobs(head, h, t))
    return torch.cat(out, dim=1)


def response_logprobs_chunked(model, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor,
                              response: torch.Tensor, chunk: int) -> torch.Tensor:
    """Log-probs [B, T] of the last T tokens of `ids` ([left-padded context | response] rows)."""
    body, head = _body_and_head(model)
    T = response.shape[1]
    hidden = body(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state  # [B, P+T, H]
    return chunked_token_logprobs(head, hidden[:, -T - 1:-1], response, chunk)  # P-1+t predicts token t
