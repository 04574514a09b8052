"""Tasks: generators of examples and pure scoring functions, in a registry keyed by name.

An example is a dict ``{"id", "prompt", "target", "answer"}``: the model sees ``prompt`` and should
produce ``target`` (a worked response whose final answer is ``answer``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from opdpipe.registry import Registry


@dataclass(frozen=True)
class Task:
    name: str
    generate: Callable[..., list[dict]]  # (n, seed, **knobs) -> unique examples, deterministic
    score: Callable[[str, str], float]  # (response, answer) -> 1.0 correct / 0.0 wrong
    stop: tuple[str, ...]  # strings that end a response
    capacity: Callable[..., int]  # (**knobs) -> number of distinct prompts the generator can make
    # (example, rng) -> [(text, learn)] segments of a response with one mistake (learn=False) and a
    # continuation consistent with it: trains a teacher that grades each token given the prefix.
    with_error: Callable | None = None


TASKS: Registry[Task] = Registry("task")


def get_task(name: str) -> Task:
    return TASKS.get(name)


from opdpipe.tasks import math as _math  # noqa: E402,F401  (registers "math")
from opdpipe.tasks import tooluse as _tooluse  # noqa: E402,F401  (registers "tooluse")
