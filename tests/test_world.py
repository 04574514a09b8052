"""Data prep, tokenizer, checkpoints, sampling and teacher-scoring alignment."""
import json

import pytest
import torch

from opdpipe import data
from opdpipe.generation import decode_responses, left_pad, sample
from opdpipe.models import build_model, load_model
from opdpipe.scoring import sequence_logprobs, teacher_logprobs
from opdpipe.sft import collate, encode_pairs
from opdpipe.tokenizer import build_char_tokenizer, check_encodable, load_tokenizer

from conftest import TASK_SPEC, TINY


def test_data_prep_is_byte_identical_and_test_never_in_train(tmp_path):
    m1 = data.run("math", TASK_SPEC, 3, tmp_path / "a")
    m2 = data.run("math", TASK_SPEC, 3, tmp_path / "b")
    for split in ("train", "validation", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
        assert m1["splits"][split] == m2["splits"][split]
    rows = {s: data.read_jsonl(tmp_path / "a" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    assert [len(rows[s]) for s in ("train", "validation", "test")] == [40, 8, 8]
    test_prompts = {e["prompt"] for e in rows["test"]}
    assert not test_prompts & {e["prompt"] for e in rows["train"] + rows["validation"]}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert {"config_hash", "seed", "code_version", "packages", "generator_version"} <= set(manifest)


def test_data_prep_rejects_sizes_beyond_the_generator(tmp_path):
    spec = {"source": "synthetic", "knobs": {"min_steps": 1, "max_steps": 1, "max_operand": 2},
            "sizes": {"train": 5000, "validation": 8, "test": 8}}
    with pytest.raises(ValueError, match=r"tasks.math.sizes: 5016 examples asked for.*guarantees only"):
        data.run("math", spec, 0, tmp_path)
    with pytest.raises(ValueError, match=r"tasks.math.sizes.test: must be a positive integer, got 0"):
        data.run("math", {**TASK_SPEC, "sizes": {"train": 4, "validation": 4, "test": 0}}, 0, tmp_path)
    assert not (tmp_path / "train.jsonl").exists()


def test_tokenizer_round_trip_through_autotokenizer(tmp_path):
    tok = build_char_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = 'Tools: a(b)\nUser: x {"a": 1}\n  #### 42'
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert len(loaded(text)["input_ids"]) == len(text)  # one id per character, newlines included
    assert loaded.decode(loaded(text)["input_ids"]) == text
    with pytest.raises(ValueError, match=r"cannot encode 2 character\(s\) \['é', '€'\]"):
        check_encodable(loaded, ["café 5€"], "task math")


def test_checkpoint_loads_with_automodel(tiny_world):
    model = load_model(tiny_world / "student")
    assert model.config.model_type == "llama"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tiny_world / "missing")
    with pytest.raises(ValueError, match="unknown key"):
        build_model({**TINY, "hidden": 3}, build_char_tokenizer(), 0)


def _rollout(world, n=6, seed=0):
    tok = load_tokenizer(world / "tokenizer")
    student = load_model(world / "student")
    prompts = [e["prompt"] for e in data.read_jsonl(world / "data" / "train.jsonl")[:n]]
    ids = [tok(p)["input_ids"] for p in prompts]
    return tok, student, ids, sample(student, ids, 12, tok.eos_token_id, tok.pad_token_id,
                                     generator=torch.Generator().manual_seed(seed))


def test_sampling_is_seeded_and_behaviour_logprobs_match_rescoring(tiny_world):
    tok, student, ids, r = _rollout(tiny_world)
    _, _, _, r2 = _rollout(tiny_world)
    assert torch.equal(r.response, r2.response)
    lp = sequence_logprobs(student, ids, r.response, r.mask, tok.pad_token_id)
    assert (lp - r.logprobs).abs().max().item() < 1e-4
    assert (r.response[r.mask == 0] == tok.pad_token_id).all()  # padding only after EOS
    assert len(decode_responses(tok, r)) == len(ids)


def test_teacher_scores_are_aligned_with_unpadded_single_sequences(tiny_world):
    """Off-by-one guard: batched, left-padded scoring equals a plain forward pass per sequence."""
    tok, _, ids, r = _rollout(tiny_world, seed=1)
    teacher = load_model(tiny_world / "teacher")
    # give the teacher a different (longer) context: a privileged prefix
    t_ids = [tok("Hint: be exact.\n")["input_ids"] + x for x in ids]
    lq = teacher_logprobs(teacher, t_ids, r.response, r.mask, tok.pad_token_id)
    for i in range(len(ids)):
        n = int(r.mask[i].sum())
        seq = torch.tensor([t_ids[i] + r.response[i, :n].tolist()])
        with torch.no_grad():
            logp = torch.log_softmax(teacher(input_ids=seq).logits[0].float(), -1)
        P = len(t_ids[i])
        expected = logp[P - 1:P - 1 + n].gather(-1, r.response[i, :n, None]).squeeze(-1)
        assert (lq[i, :n] - expected).abs().max().item() < 1e-4
        assert (lq[i, n:] == 0).all()


def test_left_pad_and_collate_layout():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    x, attn, labels = collate([([5, 6, 7, 8], [False, False, True, True])], pad_id=0)
    assert labels.tolist() == [[-100, -100, 7, 8]] and attn.tolist() == [[1, 1, 1, 1]]


@pytest.mark.parametrize("task", ["math", "tooluse"])
def test_error_segments_mask_only_the_mistake(task):
    import random

    from opdpipe.tasks import get_task
    from opdpipe.teacher import training_pairs

    t = get_task(task)
    examples = t.generate(30, 0)
    rng = random.Random(0)
    for e in examples:
        segs = t.with_error(e, rng)
        assert segs is not None and [flag for _, flag in segs] == [True, False, True]
        text = "".join(s for s, _ in segs)
        assert text != e["target"] and t.score(text, e["answer"]) == 0.0
    tok = build_char_tokenizer()
    enc = encode_pairs(tok, [("Q\n", segs)], 256)[0]
    n_masked = sum(not f for f in enc[1]) - len("Q\n")
    assert n_masked == len(segs[1][0])  # exactly the wrong characters carry no loss
    pairs = training_pairs(t, examples, 0.5, seed=0)
    assert 30 < len(pairs) < 60 and pairs[:30] == [(e["prompt"], e["target"]) for e in examples]
