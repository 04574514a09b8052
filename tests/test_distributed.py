"""Data-parallel training: 2 gloo ranks, each with half of one global batch of rollouts, take the same
optimizer step as one process with the whole batch; a 2-rank run checkpoints and resumes exactly."""
import os
import socket
import time
import warnings
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp

from opdpipe import distributed, fastlm
from opdpipe.generation import Rollout, sample
from opdpipe.trainer import RunSpec, _contexts, build_state, learn, validate

HP = {"steps": 1, "prompts_per_step": 4, "group_size": 3, "max_new_tokens": 10, "eval_size": 4, "bias_every": 0,
      "checkpoint_every": 0, "lr": 1e-3}


def _spec(world, out, **hp):
    return RunSpec("math", "forward_kl", "opd_plus", 0, str(world / "student"), str(world / "teacher"),
                   str(world / "data"), str(out), {**HP, **hp})


def _global_batch(world, out, hp):
    """One process: draw the step's prompts and their rollouts (what both set-ups learn from)."""
    spec = _spec(world, out, **hp)
    state = build_state(spec, validate(spec), None, log=lambda m: None)
    idx = torch.randint(len(state.train), (HP["prompts_per_step"],), generator=state.gen).tolist()
    prompts = [state.train[i] for i in idx]
    s_ctx = _contexts(state, prompts, "prompt", HP["group_size"])
    roll = sample(state.student, s_ctx, HP["max_new_tokens"], state.tok.eos_token_id, state.tok.pad_token_id,
                  generator=state.gen)
    return prompts, roll


def _share(prompts, roll: Rollout, rank: int, world_size: int):
    """Rank `rank`'s contiguous share of the prompts and of their rollouts (G rows per prompt)."""
    p = len(prompts) // world_size
    rows = slice(rank * p * HP["group_size"], (rank + 1) * p * HP["group_size"])
    return prompts[rank * p:(rank + 1) * p], Rollout(roll.prompt_ids[rows], roll.response[rows], roll.mask[rows],
                                                     roll.logprobs[rows], roll.truncated[rows])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world_size, port, world, out, hp, batch_file):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    out.mkdir(exist_ok=True)
    ctx = distributed.context()
    spec = _spec(world, out, world_size=world_size, **hp)
    state = build_state(spec, validate(spec), None, log=lambda m: None, ctx=ctx)
    prompts, roll = _share(*torch.load(batch_file, weights_only=False), rank, world_size)
    with fastlm.disabled():  # one forward implementation on both sides (DDP's forward is the reference path)
        metrics = learn(state, spec.cfg(), prompts, roll)
    if ctx.is_main:
        grads = {n: p.grad for n, p in state.student.named_parameters()}
        torch.save({"weights": state.student.state_dict(), "grads": grads, "metrics": metrics}, out / "rank0.pt")
    distributed.close(ctx)


def _spawn_ranks(world_size, world, out, hp, batch_file, limit_s: float = 300.0, exit_grace_s: float = 60.0):
    """mp.spawn with a watchdog: fail when the ranks have not written their result within `limit_s`;
    once rank 0's result is written, give the ranks `exit_grace_s` to leave the process group and
    exit, then end them with a warning (the result is complete by then). distributed.close guards
    the exit deadlock seen here (gloo's worker thread freeing the last barrier's work while the
    group's destructor waits on it); this keeps any other teardown hang from stalling the suite."""
    procs = mp.start_processes(_rank, args=(world_size, _free_port(), world, out, hp, batch_file), nprocs=world_size,
                               join=False, start_method="spawn")
    start, written = time.monotonic(), None
    while not procs.join(timeout=1):  # raises if a rank failed
        if written is None and (out / "rank0.pt").exists():
            written = time.monotonic()
        if written is not None and time.monotonic() - written > exit_grace_s:
            for p in procs.processes:
                p.kill()
            warnings.warn(f"the ranks did not exit within {exit_grace_s:.0f} s of writing their result; ended them")
            return
        if written is None and time.monotonic() - start > limit_s:
            for p in procs.processes:
                p.kill()
            pytest.fail(f"the {world_size} ranks wrote no result within {limit_s:.0f} s")


@pytest.mark.parametrize("hp", [{}, {"loss_agg": "seq_mean_token_sum", "normalize_advantages": True}],
                         ids=["token_mean", "seq_mean_normalized"])
def test_two_gloo_ranks_take_the_same_step_as_one_process(tiny_world, tmp_path, hp):
    torch.set_num_threads(1)
    prompts, roll = _global_batch(tiny_world, tmp_path / "one", hp)
    assert roll.mask.sum(-1).unique().numel() > 1  # unequal lengths: the global token count matters
    torch.save((prompts, roll), tmp_path / "batch.pt")
    spec = _spec(tiny_world, tmp_path / "one", **hp)
    with fastlm.disabled():  # as on the ranks: transformers' model and forward
        state = build_state(spec, validate(spec), None, log=lambda m: None)
        before = {k: v.clone() for k, v in state.student.state_dict().items()}
        one = learn(state, spec.cfg(), prompts, roll)
    _spawn_ranks(2, tiny_world, tmp_path / "two", hp, tmp_path / "batch.pt")
    two = torch.load(tmp_path / "two" / "rank0.pt", weights_only=False)
    moved = max((state.student.state_dict()[k] - before[k]).abs().max().item() for k in before)
    assert moved > 1e-4  # the step changed the weights, so equality below says something
    for k, w in state.student.state_dict().items():
        torch.testing.assert_close(two["weights"][k], w, rtol=0, atol=1e-6, msg=k)
    # AdamW's first step moves each weight by about lr * sign(grad): compare the gradients themselves,
    # to 1e-5 of the largest entry (a wrong loss normaliser is off by percents). The tied embedding's
    # gradient sums every position's head and input terms in float32, and the two ranks' halves are
    # summed in another order: 1.6e-6 of the largest entry apart on an AVX2-only CPU (within 1e-6 on
    # an AVX-512 one, whose kernels round otherwise)
    scale = max(p.grad.abs().max().item() for p in state.student.parameters())
    for n, p in state.student.named_parameters():
        torch.testing.assert_close(two["grads"][n], p.grad, rtol=0, atol=1e-5 * scale, msg=n)
    assert set(two["metrics"]) == set(one)
    for k in one:  # the step's metrics describe the whole batch, not rank 0's half (timings aside)
        if not k.startswith(("time/", "tokens_per_s")):  # abs: a loss near 0 sums cancelling O(1) terms
            assert two["metrics"][k] == pytest.approx(one[k], rel=1e-5, abs=2e-5), k


def test_world_size_must_match_the_launch(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="opd.world_size = 2 but this process is one of 1 rank"):
        from opdpipe.trainer import run
        run(_spec(tiny_world, tmp_path, world_size=2), progress=False)
    with pytest.raises(ValueError, match=r"prompts_per_step = 4 \(this run\): must be divisible by the world size 3"):
        validate(replace(_spec(tiny_world, tmp_path), hparams={**HP, "world_size": 3}))


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["opd"].update(world_size=3), r"opd.prompts_per_step = 4 \(variants.0 .*world size 3"),
    (lambda c: c.update(resources={"train": {"gpus": 4}}) or c["opd"].update(world_size=2),
     r"opd.world_size = 2: resources.train.gpus = 4 asks for one rank per GPU"),
])
def test_bad_world_sizes_fail_config_validation(edit, match):
    from opdpipe.config import ConfigError, load_yaml
    from opdpipe.config import validate as validate_config
    from test_packaging import ROOT

    cfg = load_yaml(ROOT / "configs" / "smoke.yaml")
    edit(cfg)
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)


def test_gpus_give_the_train_rule_one_rank_per_gpu():
    from opdpipe import resources
    from opdpipe.config import load
    from test_packaging import ROOT

    import yaml

    from opdpipe.config import ConfigError, validate

    paper = load(ROOT / "configs" / "paper.yaml")  # one 80 GB GPU per pretrained run (README: Sizing)
    assert resources.world_size(paper, {}) == 1
    assert resources.snakemake_resources(paper, "train") == {"gpu": 1, "mem_mb": 128000, "runtime": 1440}
    assert resources.snakemake_resources(paper, "data")["gpu"] == 0
    raw = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    raw["resources"] = {"train": {"gpus": 8, "mem_mb": 512000, "runtime": 1440}}
    cfg = validate(raw)
    assert resources.world_size(cfg, {}) == 8
    assert resources.snakemake_resources(cfg, "train") == {"gpu": 8, "mem_mb": 512000, "runtime": 1440}
    raw = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    raw["resources"]["train"]["gpus"] = 8
    with pytest.raises(ConfigError, match=r"resources.train.gpus = 8 .*wired for the embedded models only"):
        validate(raw)
