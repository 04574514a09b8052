"""What a study survives: non-finite updates, damaged checkpoints, cut metrics, damaged data.

Each test injects one fault into a tiny run and checks that it is detected, named, and either
refused (nothing bad saved) or set aside so that the run resumes with the numbers of an
uninterrupted run.
"""
import json

import pytest
import torch

from conftest import Killed, kill_at
from opdpipe import optim, trainer
from opdpipe.data import read_jsonl
from opdpipe.models import load_model
from opdpipe.trainer import NonFiniteError, RunSpec, run

FAST = {"steps": 4, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 10, "eval_every": 2,
        "eval_size": 4, "bias_every": 0, "checkpoint_every": 1}


def _spec(world, out, **hp):
    return RunSpec("math", "forward_kl", "opd_plus", 0, str(world / "student"), str(world / "teacher"),
                   str(world / "data"), str(out), {**FAST, **hp})


def _weights(path):
    return dict(load_model(path).named_parameters())


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def full(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run(_spec(tiny_world, out), progress=False)
    return out


def test_a_nan_loss_stops_training_names_the_step_and_saves_no_final(tiny_world, tmp_path, monkeypatch):
    real = trainer.policy_loss
    calls = []

    def poisoned(*args, **kw):
        loss, stats = real(*args, **kw)
        calls.append(1)
        return (loss * float("nan"), stats) if len(calls) == 3 else (loss, stats)

    monkeypatch.setattr(trainer, "policy_loss", poisoned)
    with pytest.raises(NonFiniteError, match="step 3: the loss is nan"):
        run(_spec(tiny_world, tmp_path), progress=False)
    assert not (tmp_path / "final").exists() and not (tmp_path / "summary.json").exists()
    kept = sorted(p.name for p in (tmp_path / "work" / "checkpoints").glob("step_*"))
    assert kept == ["step_000001", "step_000002"]  # the last good checkpoints stay
    assert all(torch.isfinite(p).all() for p in _weights(tmp_path / "work" / "checkpoints" / kept[-1]).values())


def test_an_update_that_makes_a_weight_non_finite_is_refused(tiny_world, tmp_path, monkeypatch):
    real, calls = optim.AdamW.step, []

    def overflowing(self, *args, **kw):
        out = real(self, *args, **kw)
        calls.append(1)
        if len(calls) == 2:
            self.param_groups[0]["params"][0].data[0, 0] = float("inf")
        return out

    monkeypatch.setattr(optim.AdamW, "step", overflowing)
    with pytest.raises(NonFiniteError, match=r"step 2: weight \S+ became non-finite"):
        run(_spec(tiny_world, tmp_path), progress=False)
    assert not (tmp_path / "final").exists()
    assert [p.name for p in (tmp_path / "work" / "checkpoints").glob("step_*")] == ["step_000001"]


def test_a_clip_at_which_the_advantages_overflow_is_refused_before_the_first_step(tiny_world, tmp_path):
    spec = RunSpec(**{**_spec(tiny_world, tmp_path, log_u_clip=60.0).__dict__, "divergence": "pearson_chi2"})
    with pytest.raises(ValueError, match=r"opd.log_u_clip = 60.0 with divergence 'pearson_chi2'.*<= 44.3"):
        run(spec, progress=False)
    assert not (tmp_path / "work" / "metrics.jsonl").exists()


def test_a_truncated_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(tiny_world, tmp_path, full):
    with pytest.raises(Killed):
        run(_spec(tiny_world, tmp_path), callbacks=(kill_at(3),), progress=False)
    newest = tmp_path / "work" / "checkpoints" / "step_000002"  # the kill at step 3 precedes its checkpoint
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a write cut short
    logs = []
    run(_spec(tiny_world, tmp_path), log=logs.append, progress=False)
    assert any("step_000002 is unreadable" in m for m in logs), logs
    assert any("resuming from" in m and "step_000001" in m for m in logs), logs
    assert _same_weights(tmp_path / "final", full / "final")
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2, 3, 4]


def test_a_corrupt_trainer_state_is_set_aside(tiny_world, tmp_path, full):
    with pytest.raises(Killed):
        run(_spec(tiny_world, tmp_path), callbacks=(kill_at(3),), progress=False)
    for ckpt in (tmp_path / "work" / "checkpoints").glob("step_*"):
        (ckpt / "trainer_state.pt").write_bytes(b"not a checkpoint")
    logs = []
    run(_spec(tiny_world, tmp_path), log=logs.append, progress=False)
    assert sum("is unreadable" in m for m in logs) == 2 and not any("resuming" in m for m in logs)
    assert _same_weights(tmp_path / "final", full / "final")  # restarted from scratch, same numbers


def test_a_partial_last_metrics_line_is_dropped_on_resume(tiny_world, tmp_path, full):
    with pytest.raises(Killed):
        run(_spec(tiny_world, tmp_path), callbacks=(kill_at(3),), progress=False)
    with open(tmp_path / "work" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "loss": 0.1')  # cut mid-line by a kill
    logs = []
    run(_spec(tiny_world, tmp_path), log=logs.append, progress=False)
    assert any("partial last line" in m for m in logs)
    assert _same_weights(tmp_path / "final", full / "final")
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2, 3, 4]


def test_metrics_missing_steps_restart_the_run_from_scratch(tiny_world, tmp_path, full):
    with pytest.raises(Killed):
        run(_spec(tiny_world, tmp_path), callbacks=(kill_at(3),), progress=False)
    stream = tmp_path / "work" / "metrics.jsonl"
    stream.write_text("".join(line + "\n" for line in stream.read_text().splitlines()[:2]))  # steps 0, 1 only
    logs = []
    run(_spec(tiny_world, tmp_path), log=logs.append, progress=False)
    assert any("does not hold every step" in m for m in logs) and any("restarts from scratch" in m for m in logs)
    assert _same_weights(tmp_path / "final", full / "final")


def test_a_damaged_data_line_is_named_and_the_split_regenerated(tiny_world, tmp_path, full):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    train = world / "data" / "train.jsonl"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:5] + ['{"prompt": "cut'] + lines[6:]) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl: line 6 is not valid JSON"):
        read_jsonl(train)
    logs = []
    run(_spec(world, tmp_path / "r"), log=logs.append, progress=False)
    assert any("does not match its manifest" in m for m in logs) and any("regenerated" in m for m in logs)
    assert train.read_text().splitlines() == lines
    assert list((world / "data").glob("train.jsonl.corrupt.*"))
    assert _same_weights(tmp_path / "r" / "final", full / "final")


def test_a_damaged_real_data_split_is_refused_by_name(tmp_path):
    from opdpipe.data import load_split

    (tmp_path / "train.jsonl").write_text('{"prompt": "a"}\n')
    (tmp_path / "manifest.json").write_text(json.dumps({"task": "math", "seed": 0, "spec": {"source": "deepmath"},
                                                        "splits": {"train": {"sha256": "0" * 64}}}))
    with pytest.raises(ValueError, match=r"train.jsonl is missing or does not match its manifest"):
        load_split(tmp_path, "train")


def test_trainer_state_loads_without_pickle(tiny_world, tmp_path):
    with pytest.raises(Killed):
        run(_spec(tiny_world, tmp_path), callbacks=(kill_at(2),), progress=False)
    state = torch.load(tmp_path / "work" / "checkpoints" / "step_000001" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 1 and set(state) == {"step", "optimizer", "scheduler", "generator", "torch_rng",
                                                 "python_rng"}


def test_a_learning_rate_that_blows_the_model_up_stops_with_a_named_step(tiny_world, tmp_path):
    with pytest.raises(NonFiniteError, match=r"step \d+: (the loss|the gradient norm|weight|the student's next-token)"):
        run(_spec(tiny_world, tmp_path, lr=1e30, max_grad_norm=1e30), progress=False)
    assert not (tmp_path / "final").exists() and not (tmp_path / "summary.json").exists()
