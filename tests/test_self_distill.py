"""On-policy self-distillation (OPSD): the privileged context reaches the teacher and never the student,
the group's data and SFT examples, and config refusals. The DAG without a teacher stage for the group
is checked on the smoke study (tests/test_workflow.py)."""
import copy

import pytest
import torch
import yaml

from opdpipe import fastlm, self_distill, trainer
from opdpipe.config import ConfigError, validate
from opdpipe.data import read_jsonl
from opdpipe.tokenizer import load_tokenizer
from test_packaging import ROOT

SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


@pytest.fixture(scope="module")
def group_data(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("opsd")
    self_distill.prepare_data({"source": "math"}, tiny_world / "data", out, out / "test_hint.jsonl", 0,
                              log=lambda *a: None)
    return out


def _forward_hooks(state, seen: dict) -> None:
    """Reference path: the real token ids (left padding dropped) of every multi-token forward pass."""
    for role in ("teacher", "student"):
        def hook(_module, args, kwargs, role=role):
            ids, attn = kwargs["input_ids"], kwargs["attention_mask"]
            if ids.shape[1] > 1:  # a context (the KV-cache steps feed one sampled token at a time)
                seen[role].extend(row[m.bool()].tolist() for row, m in zip(ids, attn))
        getattr(state, role).register_forward_pre_hook(hook, with_kwargs=True)


def _fast_path_calls(state, seen: dict, monkeypatch) -> None:
    """Fast path (opdpipe.fastlm): the contexts (+ responses) each model's sampling and scoring get."""
    sample, logprobs = fastlm.sample, fastlm.response_logprobs
    role = lambda model: "teacher" if model is state.teacher else "student"  # noqa: E731

    def rec_sample(model, prompt_ids, *a, **k):
        seen[role(model)].extend(list(p) for p in prompt_ids)
        return sample(model, prompt_ids, *a, **k)

    def rec_logprobs(model, contexts, response, mask, *a, **k):
        seen[role(model)].extend(list(c) + r[m.bool()].tolist() for c, r, m in zip(contexts, response, mask))
        return logprobs(model, contexts, response, mask, *a, **k)
    monkeypatch.setattr(fastlm, "sample", rec_sample)
    monkeypatch.setattr(fastlm, "response_logprobs", rec_logprobs)


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_the_hint_reaches_the_teacher_and_never_the_student(tiny_world, group_data, tmp_path, monkeypatch, path):
    """One OPSD step from the group's data, the student checkpoint its own teacher: every context the
    teacher scores starts with the privileged prompt's ids; every context the student reads (rollout
    sampling and the update pass) starts with the plain prompt's ids and holds no hint id sequence.
    Both model paths: the embedded fast path (opdpipe.fastlm) and the transformers forward."""
    spec = trainer.RunSpec(task="math", divergence="reverse_kl", design="opd_plus", seed=0,
                           student=str(tiny_world / "student"), teacher=str(tiny_world / "student"),
                           data_dir=str(group_data), out_dir=str(tmp_path / "run"),
                           hparams={"steps": 1, "prompts_per_step": 4, "group_size": 2, "max_new_tokens": 8,
                                    "eval_size": 4, "bias_every": 0})
    cfg = trainer.validate(spec)
    seen = {"teacher": [], "student": []}
    if path == "fast":
        state = trainer.build_state(spec, cfg, None, log=lambda *a: None)
        assert fastlm.supports(state.student)
        _fast_path_calls(state, seen, monkeypatch)
        trainer.train_step(state, cfg)
    else:
        with fastlm.disabled():  # transformers' model and forward
            state = trainer.build_state(spec, cfg, None, log=lambda *a: None)
            _forward_hooks(state, seen)
            trainer.train_step(state, cfg)

    tok = load_tokenizer(tiny_world / "tokenizer")
    train = read_jsonl(group_data / "train.jsonl")
    plain = [tok(e["prompt"])["input_ids"] for e in train]
    hinted = [tok(e["teacher_prompt"])["input_ids"] for e in train]
    marker = tok(self_distill.HINT.split("{")[0])["input_ids"]  # "Reference solution: "
    assert hinted[0] == tok(self_distill.privileged_prompt(train[0]))["input_ids"] and _contains(hinted[0], marker)
    assert len(seen["teacher"]) == 8 and len(seen["student"]) == 16  # teacher scoring; student sampling + update
    for ids in seen["teacher"]:
        assert any(ids[:len(h)] == h for h in hinted), ids
    solutions = [tok(e["target"].strip())["input_ids"] for e in train]  # the hint's worked solutions
    for ids in seen["student"]:
        j = next(j for j, p in enumerate(plain) if ids[:len(p)] == p)  # the row's prompt starts the context
        assert not _contains(ids, marker) and not _contains(ids, solutions[j]), ids
    s_ctx, t_ctx = state.last_batch[:2]  # the trainer's own record agrees, row by row
    for s, t in zip(s_ctx, t_ctx):
        j = plain.index(s)
        assert t == hinted[j] and t[-len(s):] == s  # same problem; the hint comes first, the prompt ends both


def test_group_data_and_sft_examples(tiny_world, group_data):
    train = read_jsonl(group_data / "train.jsonl")
    source = read_jsonl(tiny_world / "data" / "train.jsonl")
    assert [{k: v for k, v in e.items() if k != "teacher_prompt"} for e in train] == source
    assert all(e["teacher_prompt"] == "Reference solution: " + e["target"] + "\n" + e["prompt"] for e in train)
    hint_test = read_jsonl(group_data / "test_hint.jsonl")
    test = read_jsonl(group_data / "test.jsonl")
    assert [e["prompt"] for e in hint_test] == [e["teacher_prompt"] for e in test]
    completions = [{"id": e["id"], "prompt": e["prompt"], "completion": e["target"], "correct": 1.0} for e in source]
    rows = self_distill.sft_examples(completions, source, 0.25, seed=3)
    hinted = [r for r in rows if r["hint"]]
    assert len(hinted) == round(0.25 * len(source)) == 10
    assert all(r["prompt"].startswith("Reference solution: ") for r in hinted)
    assert [r["prompt"] for r in rows if not r["hint"]] == [c["prompt"] for c, r in zip(completions, rows)
                                                           if not r["hint"]]
    assert rows == self_distill.sft_examples(completions, source, 0.25, seed=3)  # seeded


@pytest.mark.parametrize("edit, message", [
    ({"source": "tooluse"}, "self_distillation.source = 'tooluse': its examples have no worked reference "
                            "solution to give the teacher; allowed: math"),
    ({"source": "algebra"}, "self_distillation.source = 'algebra': not a task of this study; allowed: math"),
    ({"hint_frac": 0}, "self_distillation.hint_frac: 0 is less than or equal to the minimum of 0"),
    ({"hint_frac": 1.5}, "self_distillation.hint_frac: 1.5 is greater than or equal to the maximum of 1"),
    ({"teacher": "self"}, "self_distillation: Additional properties are not allowed ('teacher' was unexpected)"),
    ({"student": {"path": "models/Qwen3-1.7B", "sft": {"num_examples": 4, "steps": 1, "batch_size": 1,
                                                       "lr": 1.0e-5}}},
     "self_distillation.student: must be built here (model) like the study's student"),
])
def test_malformed_self_distillation_block_is_refused(edit, message):
    cfg = copy.deepcopy(SMOKE)
    cfg["self_distillation"].update(edit)
    with pytest.raises(ConfigError, match="^config error at ") as err:
        validate(cfg)
    assert message in str(err.value), str(err.value)


def test_the_group_takes_its_source_budget_and_its_own_opd_block():
    from opdpipe.config import opd_hparams

    cfg = validate(SMOKE)
    hp = opd_hparams(cfg, self_distill.GROUP, "reverse_kl-opd_plus")
    assert hp["max_new_tokens"] == cfg["tasks"]["math"]["max_new_tokens"] and hp["steps"] == 2
    assert opd_hparams(cfg, "math", "reverse_kl-opd_plus")["steps"] == cfg["opd"]["steps"] == 4
    assert self_distill.study_tasks(cfg) == ["math", "tooluse", "opsd"]
