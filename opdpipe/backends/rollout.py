"""Rollout sampling behind a small interface, so that another engine (e.g. vLLM) can replace it.

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
    """Batched KV-cache sampling with the training model itself (opdpipe.generation.sample)."""

    def sample(self, model, prompt_ids, max_new_tokens, eos_id, pad_id, generator) -> Rollout:
        return sample(model, prompt_ids, max_new_tokens, eos_id, pad_id, generator=generator)

    def sync(self, model) -> None:
        pass


ENGINES: Registry = Registry("rollout engine")
ENGINES.register("hf", HFEngine)


def get_engine(name: str = "hf") -> RolloutEngine:
    return ENGINES.get(name)()
