"""Rollout sampling behind a small interface: `rollout.backend: hf | vllm`.

An engine samples `G` continuations per prompt from the current student at temperature 1 with
no truncation and returns an `opdpipe.generation.Rollout`; `sync(model)` is called after every
optimizer step so an engine holding its own copy of the weights can refresh it (a no-op here).
"""
from __future__ import annotations

from typing import Protocol

import torch

from opdpipe.generation import Rollout, sample
from opdpipe.registry import Registry


class RolloutEngine(Protocol):
    def sample(self, model, prompt_ids: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int,
               generator: torch.Generator) -> Rollout: ...

    def sync(self, model) -> None: ...


class HFEngine:
    """Batched KV-cache sampling with the training model itself (opdpipe.generation.sample).

    batch_size > 0 samples that many rollouts at a time (the KV cache of a whole step's rollouts at
    long lengths does not fit one GPU: 147 KB per token for Qwen3-8B)."""

    def __init__(self, batch_size: int = 0):
        self.batch_size = batch_size

    def sample(self, model, prompt_ids, max_new_tokens, eos_id, pad_id, generator) -> Rollout:
        size = self.batch_size or len(prompt_ids)
        parts = [sample(model, prompt_ids[i:i + size], max_new_tokens, eos_id, pad_id, generator=generator)
                 for i in range(0, len(prompt_ids), size)]
        return parts[0] if len(parts) == 1 else concat_rollouts(parts, pad_id)

    def sync(self, model) -> None:
        pass


def _vllm_engine(batch_size: int = 0, **options) -> RolloutEngine:
    """A vLLM engine (opdpipe.backends.vllm_engine; vllm itself is imported when it starts)."""
    from opdpipe.backends.vllm_engine import VLLMEngine

    return VLLMEngine(batch_size, **options)


ENGINES: Registry = Registry("rollout engine")
ENGINES.register("hf", lambda batch_size=0, **options: HFEngine(batch_size))
ENGINES.register("vllm", _vllm_engine)


def get_engine(name: str = "hf", batch_size: int = 0, **options) -> RolloutEngine:
    """options: what an engine holding its own weights needs to start (model_dir, dtype, seed, ...)."""
    return ENGINES.get(name)(batch_size, **options)


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """One Rollout from several, responses right-padded to the longest (mask and log-probs 0 there)."""
    T = max(r.response.shape[1] for r in parts)

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, T - t.shape[1]), value=value)

    return Rollout([p for r in parts for p in r.prompt_ids], torch.cat([pad(r.response, pad_id) for r in parts]),
                   torch.cat([pad(r.mask, 0) for r in parts]), torch.cat([pad(r.logprobs, 0.0) for r in parts]),
                   torch.cat([r.truncated for r in parts]))
