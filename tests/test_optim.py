"""opdpipe.optim.AdamW is torch.optim.AdamW to the bit, and never imports torch's compiler."""
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opdpipe import optim


def _train(cls, steps: int, state: dict | None = None, **kw):
    """A small net trained as the trainer does: zero_grad, backward, clipping, step, LambdaLR step."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    opt = cls(net.parameters(), lr=1e-2, **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 4))
    if state:
        net.load_state_dict(state["net"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
    gen = torch.Generator().manual_seed(2 if state else 1)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        net(torch.randn(4, 7, generator=gen)).square().mean().backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
        sched.step()
    return net, opt, sched


def _saved(net, opt, sched) -> dict:
    """The three states as a checkpoint holds them: written and read back (torch.save, torch.load)."""
    buf = io.BytesIO()
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.0, "betas": (0.9, 0.98)}, {"weight_decay": 0.1, "eps": 1e-6},
                                {"amsgrad": True}, {"maximize": True}, {"foreach": True}])
def test_steps_and_state_are_torchs_to_the_bit(kw):
    ours, ours_opt, _ = _train(optim.AdamW, 25, **kw)
    theirs, theirs_opt, _ = _train(torch.optim.AdamW, 25, **kw)
    assert _same(ours.parameters(), theirs.parameters())
    a, b = ours_opt.state_dict(), theirs_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert [sorted(s) for s in a["state"].values()] == [sorted(s) for s in b["state"].values()]
    assert all(_same(a["state"][i].values(), b["state"][i].values()) for i in b["state"])


def test_a_run_resumed_from_torchs_state_continues_as_torch_would():
    """A checkpoint written by torch.optim.AdamW (older runs) resumes in opdpipe.optim.AdamW and back."""
    net, opt, sched = _train(torch.optim.AdamW, 10, weight_decay=0.05)
    ours, _, _ = _train(optim.AdamW, 10, state=_saved(net, opt, sched), weight_decay=0.05)
    theirs, _, _ = _train(torch.optim.AdamW, 10, state=_saved(net, opt, sched), weight_decay=0.05)
    assert _same(ours.parameters(), theirs.parameters())
    net2, opt2, sched2 = _train(optim.AdamW, 10, weight_decay=0.05)
    assert _same(net2.parameters(), net.parameters())
    back, _, _ = _train(torch.optim.AdamW, 10, state=_saved(net2, opt2, sched2), weight_decay=0.05)
    assert _same(back.parameters(), theirs.parameters())


def test_differentiable_is_refused_with_what_to_use():
    p = torch.nn.Parameter(torch.ones(2))
    opt = optim.AdamW([p], differentiable=True)
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="differentiable=True is not supported; use torch.optim.AdamW"):
        opt.step()


def test_the_optimizer_imports_no_compiler():
    """What each job's start saves: torch.optim.AdamW's first call imports torch._dynamo (1.2-1.4 s)."""
    code = ("import sys, torch; from tests.test_optim import _train; from opdpipe import optim; "
            "net, opt, sched = _train(optim.AdamW, 3); opt.load_state_dict(opt.state_dict()); "
            "print('torch._dynamo' in sys.modules); "
            "_train(torch.optim.AdamW, 1); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "True"]  # the second line: the check itself can see the import it guards against
