"""OPD on a pretrained hub-format pair: LoRA, chunked log-probs, micro-batches, resume, and one
chat rendering shared by the rollouts, the teacher's scoring and lm-eval."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import MINI_CHAT, Killed, kill_at
from opdpipe import trainer
from opdpipe.data import read_jsonl

FAST = {"steps": 4, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "eval_every": 2,
        "eval_size": 4, "bias_every": 0, "checkpoint_every": 2, "lr": 1e-2, "logprob_chunk": 3}
BACKEND = {"teacher": {"dtype": "float32", "device": "cpu"},
           "student": {"device": "cpu", "dtype": "float32",
                       "adapter": {"type": "lora", "rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
           "chat": MINI_CHAT}


def _spec(mini, world, out, backend=BACKEND, **hp):
    return trainer.RunSpec("math", "reverse_kl", "opd_plus", 0, str(mini / "student"), str(mini / "teacher"),
                           str(world / "data"), str(out), {**FAST, **hp}, backend)


def _weights(path):
    return dict(AutoModelForCausalLM.from_pretrained(str(path)).named_parameters())


def test_lora_run_saves_a_merged_plain_checkpoint(mini_world, tiny_world, tmp_path):
    s = trainer.run(_spec(mini_world, tiny_world, tmp_path), progress=False)
    assert torch.isfinite(torch.tensor(s["final"]["loss"]))
    final, base = _weights(tmp_path / "final"), _weights(mini_world / "student")
    changed = {n for n in final if not torch.equal(final[n], base[n])}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed), changed
    assert not any("lora" in n for n in final)


def test_micro_batches_accumulate_to_the_whole_batch(mini_world, tiny_world, tmp_path):
    whole = trainer.run(_spec(mini_world, tiny_world, tmp_path / "a", steps=2), progress=False)
    micro = trainer.run(_spec(mini_world, tiny_world, tmp_path / "b", steps=2, micro_batch_size=1), progress=False)
    assert abs(whole["final"]["loss"] - micro["final"]["loss"]) < 1e-5
    a, b = _weights(tmp_path / "a" / "final"), _weights(tmp_path / "b" / "final")
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=1e-5, rtol=1e-4, msg=n)


def test_bf16_autocast_and_gradient_checkpointing_train(mini_world, tiny_world, tmp_path):
    backend = {**BACKEND, "teacher": {"dtype": "bfloat16"},
               "student": {**BACKEND["student"], "dtype": "bfloat16", "gradient_checkpointing": True}}
    s = trainer.run(_spec(mini_world, tiny_world, tmp_path, backend, steps=2), progress=False)
    assert torch.isfinite(torch.tensor(s["final"]["loss"]))
    # the frozen LoRA base is held in bf16; the merged checkpoint keeps that dtype
    assert {p.dtype for p in _weights(tmp_path / "final").values()} == {torch.bfloat16}


def test_full_fine_tuning_keeps_float32_master_weights_under_bf16_autocast(mini_world, tiny_world, tmp_path):
    backend = {**BACKEND, "student": {"device": "cpu", "dtype": "bfloat16"}}
    s = trainer.run(_spec(mini_world, tiny_world, tmp_path, backend, steps=2), progress=False)
    assert torch.isfinite(torch.tensor(s["final"]["loss"]))
    assert {p.dtype for p in _weights(tmp_path / "final").values()} == {torch.float32}


def test_rollouts_sampled_in_batches_have_one_shape(mini_world, tiny_world, tmp_path):
    s = trainer.run(_spec(mini_world, tiny_world, tmp_path, steps=2, rollout_batch_size=1), progress=False)
    assert torch.isfinite(torch.tensor(s["final"]["loss"]))


def test_a_killed_lora_run_resumes_to_the_same_weights(mini_world, tiny_world, tmp_path):
    trainer.run(_spec(mini_world, tiny_world, tmp_path / "full"), progress=False)

    with pytest.raises(Killed):
        trainer.run(_spec(mini_world, tiny_world, tmp_path / "r"), callbacks=(kill_at(3),), progress=False)
    ckpt = tmp_path / "r" / "work" / "checkpoints" / "step_000002"
    assert (ckpt / "adapter_model.safetensors").exists() and (ckpt / "trainer_state.pt").exists()
    trainer.run(_spec(mini_world, tiny_world, tmp_path / "r"), progress=False)
    a, b = _weights(tmp_path / "full" / "final"), _weights(tmp_path / "r" / "final")
    for n in a:
        assert torch.equal(a[n], b[n]), n


def test_rollouts_teacher_scoring_and_lm_eval_see_the_same_prompt_ids(mini_world, tiny_world, tmp_path,
                                                                      monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from opdpipe import evaluate

    from opdpipe import scoring

    seen = {}
    real_teacher = scoring.teacher_logprobs

    def spy_teacher(teacher, ctx, *a, **k):
        seen.setdefault("teacher", ctx)
        return real_teacher(teacher, ctx, *a, **k)

    monkeypatch.setattr(scoring, "teacher_logprobs", spy_teacher)
    data = tmp_path / "data"
    data.mkdir()
    rows = read_jsonl(tiny_world / "data" / "train.jsonl")[:2]
    for split in ("train", "validation"):  # the teacher sees the privileged hook with the same text
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps({**e, "teacher_prompt": e["prompt"]}) + "\n" for e in rows))
    from opdpipe.provenance import sha256_file

    (data / "manifest.json").write_text(json.dumps({"task": "math", "seed": 0, "spec": {"source": "test"}, "splits": {
        s: {"count": 2, "sha256": sha256_file(data / f"{s}.jsonl")} for s in ("train", "validation")}}))
    spec = _spec(mini_world, tiny_world, tmp_path / "run", steps=1, prompts_per_step=1, group_size=1)
    spec.data_dir = str(data)
    state_ids = {}
    real_sample = trainer.runtime.get_engine("hf").__class__.sample

    def spy_sample(self, model, prompt_ids, *a, **k):
        state_ids.setdefault("rollout", prompt_ids)
        return real_sample(self, model, prompt_ids, *a, **k)

    monkeypatch.setattr(trainer.runtime.get_engine("hf").__class__, "sample", spy_sample)
    trainer.run(spec, progress=False)
    (data / "test.jsonl").write_text((data / "train.jsonl").read_text())
    ev = evaluate.run(tmp_path / "run" / "final", "math", data / "test.jsonl", tmp_path / "eval.json", k=1,
                      max_gen_toks=4, batch_size=2, chat=MINI_CHAT)
    lm = HFLM(pretrained=str(tmp_path / "run" / "final"), device="cpu", dtype="float32")
    by_prompt = {s["prompt"]: lm.tok_batch_encode([s["context"]])[0][0].tolist() for s in ev["samples"]}
    rollout_ids, teacher_ids = state_ids["rollout"][0], seen["teacher"][0]
    assert rollout_ids == teacher_ids
    assert rollout_ids == by_prompt[rows[0]["prompt"]], (rollout_ids, by_prompt)
    assert ev["samples"][0]["context"].startswith("<|im_start|>user\n") and "<think>" in ev["samples"][0]["context"]


def test_sft_init_through_the_lora_adapter_is_merged(mini_world, tiny_world, tmp_path):
    from opdpipe import student

    rows = read_jsonl(tiny_world / "data" / "train.jsonl")[:8]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"prompt": e["prompt"], "completion": e["target"],
                                                          "correct": True}) + "\n" for e in rows))
    cfg = {"path": str(mini_world / "student"), "chat": MINI_CHAT, **BACKEND["student"],
           "sft": {"num_examples": 8, "steps": 3, "batch_size": 4, "lr": 1e-2, "adapter": True}}
    student.run("math", cfg, tmp_path / "c.jsonl", mini_world / "student", tmp_path / "out", seed=0)
    final, base = _weights(tmp_path / "out" / "checkpoint"), _weights(mini_world / "student")
    changed = {n for n in final if not torch.equal(final[n], base[n])}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed), changed


def test_a_lora_run_does_not_depend_on_the_global_random_state(mini_world, tiny_world, tmp_path):
    trainer.run(_spec(mini_world, tiny_world, tmp_path / "a", steps=1), progress=False)
    torch.manual_seed(12345)  # whatever ran before in the process
    torch.rand(7)
    trainer.run(_spec(mini_world, tiny_world, tmp_path / "b", steps=1), progress=False)
    a, b = _weights(tmp_path / "a" / "final"), _weights(tmp_path / "b" / "final")
    assert all(torch.equal(a[n], b[n]) for n in a)
