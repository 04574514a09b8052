"""The OPD trainer on a tiny world: bad input, metrics, bias meter, checkpoints and resume."""
import json

import pytest
import torch

from conftest import Killed, kill_at
from opdpipe.data import read_jsonl
from opdpipe.models import load_model
from opdpipe.trainer import RunSpec, run

FAST = {"steps": 4, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 10, "eval_every": 2,
        "eval_size": 4, "bias_every": 2, "bias_rollouts": 4, "checkpoint_every": 2}


def _spec(world, out, **hp):
    return RunSpec("math", "forward_kl", "opd_plus", 0, str(world / "student"), str(world / "teacher"),
                   str(world / "data"), str(out), {**FAST, **hp})


@pytest.mark.parametrize("hp, match", [
    ({"temperature": 0.7}, "opd.temperature = 0.7"),
    ({"top_k": 20}, "opd.top_k = 20"),
    ({"top_p": 0.9}, "opd.top_p = 0.9"),
    ({"loss_agg": "sum"}, "opd.loss_agg = 'sum'; allowed: token_mean"),
    ({"num_substeps": 3}, "must divide the batch of 4"),
    ({"learning_rate": 1e-3}, r"unknown key\(s\) \['learning_rate'\]"),
])
def test_bad_hyperparameters_fail_before_the_first_step(tiny_world, tmp_path, hp, match):
    with pytest.raises(ValueError, match=match):
        run(_spec(tiny_world, tmp_path / "r", **hp), progress=False)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_bad_names_and_missing_checkpoints(tiny_world, tmp_path):
    spec = _spec(tiny_world, tmp_path)
    with pytest.raises(KeyError, match="unknown divergence 'kl'"):
        run(RunSpec(**{**spec.__dict__, "divergence": "kl"}), progress=False)
    with pytest.raises(KeyError, match="unknown advantage design 'ppo'"):
        run(RunSpec(**{**spec.__dict__, "design": "ppo"}), progress=False)
    with pytest.raises(FileNotFoundError, match="teacher checkpoint .* not found"):
        run(RunSpec(**{**spec.__dict__, "teacher": str(tmp_path / "none")}), progress=False)


def test_vocabulary_mismatch_is_refused(tiny_world, tmp_path):
    from opdpipe.models import build_model, save_checkpoint
    from opdpipe.tokenizer import build_char_tokenizer

    other = build_char_tokenizer("0123456789+-=. #\n")
    save_checkpoint(build_model({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "intermediate_size": 32, "max_position_embeddings": 64}, other, 0), other,
                    tmp_path / "t")
    spec = RunSpec(**{**_spec(tiny_world, tmp_path / "r").__dict__, "teacher": str(tmp_path / "t")})
    with pytest.raises(ValueError, match="tokenizers differ"):
        run(spec, progress=False)


def test_run_records_metrics_summary_and_bias(tiny_world, tmp_path):
    seen = []
    s = run(_spec(tiny_world, tmp_path), callbacks=(lambda step, m: seen.append(step),), progress=False)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4] and seen == [0, 1, 2, 3, 4]
    for key in ("loss", "grad_norm", "log_u/mean", "f_u/mean", "adv/mean", "adv/std", "adv/min", "adv/max",
                "log_u/clip_frac", "response/len_mean", "response/trunc_frac", "tokens_per_s",
                "time/rollout_s", "time/teacher_s", "time/update_s"):
        assert key in rows[1], key
    assert "val/greedy_acc" in rows[0] and "val/greedy_acc" in rows[2] and "bias/cos_expected" in rows[2]
    # OPD+ is unbiased: its vocabulary-expected gradient is the exact one
    assert rows[2]["bias/cos_expected"] > 0.999999 and rows[2]["bias/relerr_expected"] < 1e-4
    for key in ("config_hash", "seed", "code_version", "packages", "config", "wall_s"):
        assert key in s
    assert (tmp_path / "final" / "config.json").exists() and not (tmp_path / "work").exists()


def test_minibatched_updates_take_their_own_passes(tiny_world, tmp_path):
    one = run(_spec(tiny_world, tmp_path / "one"), progress=False)
    two = run(_spec(tiny_world, tmp_path / "two", num_substeps=2), progress=False)
    assert all(torch.isfinite(torch.tensor(s["final"]["loss"])) for s in (one, two))
    w1, w2 = (dict(load_model(tmp_path / r / "final").named_parameters()) for r in ("one", "two"))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # two optimizer steps per batch, not one


def test_every_log_prob_pass_of_an_update_goes_through_the_learner(tiny_world, tmp_path, monkeypatch):
    """With several ranks the learner is DDP over the student (transformers' forward, not the fast
    path): the behaviour log-probs of minibatched updates come through it too, so the ratio's two
    sides are computed the same way."""
    from opdpipe import trainer

    class Wrapped(torch.nn.Module):  # stands in for DDP: a wrapper the fast path refuses
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    spec = _spec(tiny_world, tmp_path, num_substeps=2)
    monkeypatch.setattr(trainer, "load_trainable", lambda path, plain: load_model(path))  # as with ranks (plain=False)
    state = trainer.build_state(spec, trainer.validate(spec), None, log=lambda m: None)
    state.learner = Wrapped(state.student)
    seen, real = [], trainer.sequence_logprobs
    monkeypatch.setattr(trainer, "sequence_logprobs", lambda model, *a, **k: seen.append(model) or real(model, *a, **k))
    metrics = trainer.train_step(state, spec.cfg())
    assert len(seen) == 3 and all(m is state.learner for m in seen)  # theta_old once, then one pass per minibatch
    assert torch.isfinite(torch.tensor(metrics["loss"]))


def test_bias_meter_sees_stop_gradient_bias(tiny_world, tmp_path):
    run(RunSpec(**{**_spec(tiny_world, tmp_path).__dict__, "design": "opd"}), progress=False)
    row = read_jsonl(tmp_path / "metrics.jsonl")[2]
    assert row["bias/relerr_expected"] > 0.05 and row["bias/cos_expected"] < 0.999


def test_resume_after_a_kill_gives_the_same_result(tiny_world, tmp_path):
    full = run(_spec(tiny_world, tmp_path / "full"), progress=False)

    with pytest.raises(Killed):
        run(_spec(tiny_world, tmp_path / "resumed"), callbacks=(kill_at(3),), progress=False)
    ckpts = list((tmp_path / "resumed" / "work" / "checkpoints").glob("step_*"))
    assert [c.name for c in ckpts] == ["step_000002"] and not (tmp_path / "resumed" / "summary.json").exists()
    assert not list((tmp_path / "resumed" / "work" / "checkpoints").glob(".*"))  # no half-written folder
    (tmp_path / "resumed" / "metrics.jsonl").unlink(missing_ok=True)  # as a workflow cleans declared outputs
    resumed = run(_spec(tiny_world, tmp_path / "resumed"), progress=False)
    assert resumed["final"] == full["final"] | {"tokens_per_s": resumed["final"]["tokens_per_s"],
                                               "time/rollout_s": resumed["final"]["time/rollout_s"],
                                               "time/teacher_s": resumed["final"]["time/teacher_s"],
                                               "time/update_s": resumed["final"]["time/update_s"]}
    a, b = load_model(tmp_path / "full" / "final"), load_model(tmp_path / "resumed" / "final")
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    steps = [r["step"] for r in read_jsonl(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps == [0, 1, 2, 3, 4]
