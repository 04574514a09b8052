"""torch's AdamW, without importing torch's compiler on the way.

Every public method of torch.optim.Optimizer (add_param_group, which the constructor calls, step,
zero_grad, state_dict, load_state_dict) is wrapped so that torch.compile leaves it alone, and the
wrapper imports torch._dynamo on its first call: 1.2-1.4 s of a short job's start on the CPU, for a
compiler that no opdpipe job uses. `AdamW` calls the same torch methods unwrapped (each wrapper keeps
its function as `__wrapped__`, functools' convention), so its steps, its state dict and a resumed
run's numbers are torch.optim.AdamW's, bit for bit (tests/test_optim.py). Under torch.compile, use
torch.optim.AdamW itself.
"""
from __future__ import annotations

import inspect

import torch
from torch.optim import Optimizer


def _plain(method):
    """The function under torch's wrappers (torch._disable_dynamo, _use_grad_for_differentiable, the
    profiling hook that an optimizer's constructor puts on its class's step)."""
    return inspect.unwrap(method)


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW (same arguments, defaults, state dict and arithmetic), compiler not imported."""

    def add_param_group(self, param_group: dict) -> None:
        _plain(Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _plain(Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict:
        return _plain(Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict) -> None:
        _plain(Optimizer.load_state_dict)(self, state_dict)

    def step(self, closure=None):
        if self.defaults["differentiable"]:  # torch's step runs with gradients on only for this option
            raise ValueError("opdpipe.optim.AdamW: differentiable=True is not supported; use torch.optim.AdamW")
        with torch.no_grad():
            return _plain(torch.optim.Adam.step)(self, closure)
