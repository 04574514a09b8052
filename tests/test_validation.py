"""Validation avg@k during training and the best checkpoint it chooses (opdpipe.validation).

The numbers a tiny untrained world measures are all 0, so the selection tests script the validation
avg@k per step (through `validation.measure`) and check what is kept, where, and after a kill."""
import json
import shutil

import pytest
import torch

from opdpipe import validation
from opdpipe.data import read_jsonl
from opdpipe.models import load_model
from opdpipe.trainer import RunSpec, run

FAST = {"steps": 6, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 10, "eval_every": 1,
        "eval_size": 4, "val_k": 3, "bias_every": 0, "checkpoint_every": 1}


class Killed(Exception):
    pass


def _spec(world, out, data=None, **hp):
    return RunSpec("math", "reverse_kl", "opd_plus", 0, str(world / "student"), str(world / "teacher"),
                   str(data or world / "data"), str(out), {**FAST, **hp})


def _same(a, b) -> bool:
    wa, wb = (dict(load_model(p).named_parameters()) for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _scripted(monkeypatch, values: dict[int, float], seen: list | None = None):
    """validation.measure returns values[step] (the real greedy accuracy is not needed here)."""
    def fake(state, cfg, seed):
        if seen is not None:
            seen.append([e["id"] for e in state.val])
        return {validation.GREEDY_KEY: 0.0, validation.VAL_KEY: values[state.step]}
    monkeypatch.setattr(validation, "measure", fake)


# ---------------------------------------------------------------- the rule, on rows
def test_the_rule_takes_the_highest_validated_step_after_0_and_the_earlier_of_ties():
    rows = [{"step": 0, "val/avg_at_k": 0.9}, {"step": 1, "loss": 1.0}, {"step": 2, "val/avg_at_k": 0.25},
            {"step": 4, "val/avg_at_k": 0.5, "test/avg_at_k": 0.0}, {"step": 6, "val/avg_at_k": 0.5},
            {"step": 8, "val/avg_at_k": 0.125, "test/avg_at_k": 1.0}]
    assert validation.choose_best(rows) == (4, 0.5)  # not step 0 (the SFT-init student), not the test's pick
    assert validation.improvements(rows) == [(2, 0.25), (4, 0.5)]
    assert validation.choose_best(rows[:2]) is None


def test_a_non_finite_validation_value_is_never_the_best():
    rows = [{"step": 2, "val/avg_at_k": float("nan")}, {"step": 4, "val/avg_at_k": 0.25},
            {"step": 6, "val/avg_at_k": float("inf")}]
    assert validation.choose_best(rows) == (4, 0.25)
    assert validation.choose_best(rows[:1]) is None


def test_greedy_and_sampled_validation_run_in_the_rollouts_precision(monkeypatch):
    """A backend with autocast (bf16 rollouts): both validation measures run inside it, as the rollouts do."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    inside, seen = [False], {}

    class Runtime:
        @contextmanager
        def autocast(self):
            inside[0] = True
            yield
            inside[0] = False

        def encode(self, tok, texts):
            return [[1] for _ in texts]

    monkeypatch.setattr(validation, "greedy_accuracy", lambda *a, **k: (seen.setdefault("greedy", inside[0]), []))
    monkeypatch.setattr(validation, "sampled_accuracy", lambda *a, **k: seen.setdefault("sampled", inside[0]))
    state = SimpleNamespace(runtime=Runtime(), student=torch.nn.Linear(1, 1), tok=None, val=[], score=None)
    validation.measure(state, {"max_new_tokens": 4, "val_k": 2, "rollout_batch_size": 0}, seed=0)
    assert seen == {"greedy": True, "sampled": True}


def test_sampled_accuracy_is_avg_at_k_and_repeats_with_its_seed(tiny_world):
    from opdpipe.tasks.graders import scorer_for
    from opdpipe.tokenizer import load_tokenizer

    model, tok = load_model(tiny_world / "student"), load_tokenizer(tiny_world / "student")
    val = read_jsonl(tiny_world / "data" / "validation.jsonl")[:4]
    texts = []
    score = scorer_for("math", val)

    def counting(text, answer):
        texts.append(text)
        return float(len(texts) % 3 == 0)  # a known share of correct samples: 1 in 3

    def avg(seed, scorer):
        g = torch.Generator().manual_seed(validation.validation_seed(seed))
        return validation.sampled_accuracy(model, tok, val, scorer, 10, 3, g, batch_prompts=3)

    assert avg(0, counting) == pytest.approx(4 / 12) and len(texts) == 12  # k = 3 samples of each of 4 prompts
    first, texts[:] = list(texts), []
    avg(0, counting)
    assert texts == first  # same seed, same samples
    avg(1, counting)
    assert texts != first  # the run seed matters
    assert 0.0 <= avg(0, score) <= 1.0


# ---------------------------------------------------------------- in a training run
def test_validation_does_not_disturb_training(tiny_world, tmp_path, monkeypatch):
    """The same weights and training metrics with the validation sampling as without it."""
    with_val = run(_spec(tiny_world, tmp_path / "with", steps=4), progress=False)
    rows = read_jsonl(tmp_path / "with" / "metrics.jsonl")
    assert [r["step"] for r in rows if "val/avg_at_k" in r] == [0, 1, 2, 3, 4]
    monkeypatch.setattr(validation, "sampled_accuracy", lambda *a, **k: 0.0)  # no validation sampling at all
    without = run(_spec(tiny_world, tmp_path / "without", steps=4), progress=False)
    assert _same(tmp_path / "with" / "final", tmp_path / "without" / "final")
    for key in ("loss", "rollout/acc", "log_u/mean", "grad_norm"):
        assert with_val["final"][key] == without["final"][key], key


def test_best_holds_the_weights_of_the_step_validation_chose(tiny_world, tmp_path, monkeypatch):
    seen = []
    _scripted(monkeypatch, {0: 0.9, 1: 0.2, 2: 0.5, 3: 0.5, 4: 0.3, 5: 0.1, 6: 0.4}, seen)
    s = run(_spec(tiny_world, tmp_path / "r"), progress=False)
    assert s["best"]["step"] == 2 and s["best"]["value"] == 0.5 and not s["best"]["is_final"]
    assert s["val_avg_at_k"][0] == [0, 0.9] or s["val_avg_at_k"][0] == (0, 0.9)
    val_ids = {e["id"] for e in read_jsonl(tiny_world / "data" / "validation.jsonl")}
    test_ids = {e["id"] for e in read_jsonl(tiny_world / "data" / "test.jsonl")}
    assert seen and all(set(ids) <= val_ids and not set(ids) & test_ids for ids in seen)  # validation only
    run(_spec(tiny_world, tmp_path / "two", steps=2), progress=False)  # the same trajectory, stopped at step 2
    assert _same(tmp_path / "r" / "best", tmp_path / "two" / "final")
    assert not _same(tmp_path / "r" / "best", tmp_path / "r" / "final")
    assert (tmp_path / "r" / "best" / "tokenizer.json").exists() and not (tmp_path / "r" / "work").exists()


def test_a_different_test_split_does_not_change_the_choice(tiny_world, tmp_path, monkeypatch):
    """Selection never reads the test split: replacing it (here with the validation prompts with the
    answers changed, a split that would favour other steps) changes nothing, while a different
    validation split is what the selection reads."""
    _scripted(monkeypatch, {0: 0.0, 1: 0.3, 2: 0.1, 3: 0.6, 4: 0.2, 5: 0.6, 6: 0.5})
    data = tmp_path / "data"
    shutil.copytree(tiny_world / "data", data)
    (data / "test.jsonl").write_text("this is not JSON\n")  # any read of it would fail
    a = run(_spec(tiny_world, tmp_path / "a"), progress=False)
    b = run(_spec(tiny_world, tmp_path / "b", data=data), progress=False)
    assert a["best"] == b["best"] and a["best"]["step"] == 3
    assert _same(tmp_path / "a" / "best", tmp_path / "b" / "best")


def test_real_validation_reads_the_first_validation_prompts_only(tiny_world, tmp_path, monkeypatch):
    """The unscripted measure: with an unreadable test split, every validation scores the first
    eval_size prompts of validation.jsonl (greedy and sampled) and the run ends normally."""
    data = tmp_path / "data"
    shutil.copytree(tiny_world / "data", data)
    (data / "test.jsonl").write_text("this is not JSON\n")
    seen = []

    def spy(kind, real):  # records the prompts, then measures for real
        return lambda model, tok, examples, *a, **k: seen.append((kind, [e["prompt"] for e in examples])) or \
            real(model, tok, examples, *a, **k)

    monkeypatch.setattr(validation, "greedy_accuracy", spy("greedy", validation.greedy_accuracy))
    monkeypatch.setattr(validation, "sampled_accuracy", spy("sampled", validation.sampled_accuracy))
    summary = run(_spec(tiny_world, tmp_path / "r", data=data, steps=2, eval_size=3), progress=False)
    first = [r["prompt"] for r in read_jsonl(data / "validation.jsonl")[:3]]
    assert [kind for kind, _ in seen] == ["greedy", "sampled"] * 3  # steps 0, 1 and 2
    assert all(prompts == first for _, prompts in seen)
    assert [step for step, _ in summary["val_avg_at_k"]] == [0, 1, 2]


def test_resume_after_a_kill_keeps_the_best_so_far(tiny_world, tmp_path, monkeypatch):
    values = {0: 0.0, 1: 0.2, 2: 0.5, 3: 0.1, 4: 0.3, 5: 0.7, 6: 0.6}
    _scripted(monkeypatch, values)
    full = run(_spec(tiny_world, tmp_path / "full"), progress=False)
    assert full["best"]["step"] == 5

    def kill_at_5(step, metrics):
        if step == 5:  # step 5 was just kept as the new best; its resumable checkpoint is not written yet
            raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run(_spec(tiny_world, out), callbacks=(kill_at_5,), progress=False)
    kept = sorted(d.name for d in (out / "work" / "best").glob("step_*"))
    assert kept == ["step_000002", "step_000005"]  # step 1 pruned: no kept checkpoint (3, 4) can need it
    resumed = run(_spec(tiny_world, out), progress=False)
    assert resumed["best"] == full["best"] and resumed["val_avg_at_k"] == full["val_avg_at_k"]
    assert _same(out / "best", tmp_path / "full" / "best")


def test_resume_before_a_new_best_restores_the_older_one(tiny_world, tmp_path, monkeypatch):
    """Killed after the new best of step 5 but resumed from step 4: the best so far is step 2 again,
    whose weights must still be there; a run whose best weights are gone starts afresh."""
    _scripted(monkeypatch, {0: 0.0, 1: 0.2, 2: 0.5, 3: 0.1, 4: 0.3, 5: 0.7, 6: 0.6})
    out = tmp_path / "r"

    def kill_at_5(step, metrics):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        run(_spec(tiny_world, out), callbacks=(kill_at_5,), progress=False)
    best = validation.restored(out / "work" / "best", out / "work" / "metrics.jsonl")
    assert best.current == (5, 0.7)
    logs = []
    assert validation.resumable(out / "work" / "best", out / "work" / "metrics.jsonl", 5, logs.append)
    # as the trainer does on resume at step 4: metrics cut back, later weights dropped, the best is step 2
    rows = read_jsonl(out / "work" / "metrics.jsonl")
    (out / "work" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= 4))
    assert validation.resumable(out / "work" / "best", out / "work" / "metrics.jsonl", 4, logs.append)
    assert sorted(d.name for d in (out / "work" / "best").glob("step_*")) == ["step_000002"]
    shutil.rmtree(out / "work" / "best" / "step_000002")
    assert not validation.resumable(out / "work" / "best", out / "work" / "metrics.jsonl", 4, logs.append)
    assert "best checkpoint so far (step 2" in logs[-1] and "restarts from scratch" in logs[-1]


def test_a_run_whose_best_weights_are_gone_restarts_and_ends_the_same(tiny_world, tmp_path, monkeypatch):
    _scripted(monkeypatch, {0: 0.0, 1: 0.2, 2: 0.5, 3: 0.1, 4: 0.3, 5: 0.7, 6: 0.6})
    full = run(_spec(tiny_world, tmp_path / "full"), progress=False)
    out = tmp_path / "r"

    def kill_at_4(step, metrics):
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        run(_spec(tiny_world, out), callbacks=(kill_at_4,), progress=False)
    shutil.rmtree(out / "work" / "best")
    logs = []
    again = run(_spec(tiny_world, out), log=logs.append, progress=False)
    assert any("restarts from scratch" in m for m in logs)
    assert again["best"] == full["best"] and _same(out / "best", tmp_path / "full" / "best")


def test_best_at_the_last_step_is_the_final_checkpoint(tiny_world, tmp_path, monkeypatch):
    _scripted(monkeypatch, {0: 0.0, 1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4, 5: 0.5, 6: 0.6})
    s = run(_spec(tiny_world, tmp_path), progress=False)
    assert s["best"]["step"] == 6 and s["best"]["is_final"]
    assert _same(tmp_path / "best", tmp_path / "final")



def test_best_at_the_last_step_reuses_final_evaluation(tmp_path):
    from opdpipe import evaluate

    final = {"label": "v/seed0", "k": 2, "avg_at_k": 0.25, "greedy_acc": 0.5, "samples": [{"id": 1}]}
    (tmp_path / "eval.json").write_text(json.dumps(final))
    (tmp_path / "summary.json").write_text(json.dumps({"best": {"step": 6, "value": 0.5, "is_final": True}}))
    out = evaluate.run_best(tmp_path / "best", tmp_path / "summary.json", tmp_path / "eval.json",
                            tmp_path / "eval_best.json", label="v/seed0", task="math", data_file="unused")
    assert json.loads((tmp_path / "eval_best.json").read_text()) == out
    assert out["avg_at_k"] == 0.25 and out["samples"] == final["samples"] and out["best"]["step"] == 6
    assert out["reused_from"] == str(tmp_path / "eval.json") and "final step" in out["note"]


def test_a_lora_run_writes_its_best_checkpoint_merged(mini_world, tiny_world, tmp_path, monkeypatch):
    """Pretrained models with a LoRA adapter: work/best/ keeps the adapter, best/ is merged and plain."""
    from transformers import AutoModelForCausalLM

    from test_backends_training import _spec as lora_spec

    _scripted(monkeypatch, {0: 0.0, 2: 0.5, 4: 0.1})
    s = run(lora_spec(mini_world, tiny_world, tmp_path / "r"), progress=False)
    assert s["best"]["step"] == 2 and not s["best"]["is_final"]
    run(lora_spec(mini_world, tiny_world, tmp_path / "two", steps=2), progress=False)
    best = dict(AutoModelForCausalLM.from_pretrained(str(tmp_path / "r" / "best")).named_parameters())
    assert not any("lora" in n for n in best)
    assert _same(tmp_path / "r" / "best", tmp_path / "two" / "final")
    assert not _same(tmp_path / "r" / "best", tmp_path / "r" / "final")
