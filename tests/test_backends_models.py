"""Pretrained models through opdpipe.backends: sources, devices, vocabularies, chat, LoRA, training."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import MINI_CHAT
from opdpipe.backends import chat, device, loading, lora, vocab

HEX = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("block, match", [
    ({"hf_id": "Qwen/Qwen3-8B"}, "student.revision = None: a hub model needs a pinned commit"),
    ({"hf_id": "Qwen/Qwen3-8B", "revision": "main"}, "student.revision = 'main'"),
    ({"hf_id": "Qwen/Qwen3-8B", "revision": HEX[:12]}, "40 hex digits"),
    ({"path": "x", "hf_id": "y", "revision": HEX}, r"exactly one of .* got \['path', 'hf_id'\]"),
    ({"path": "x", "revision": HEX}, "only a hub model"),
])
def test_unpinned_or_ambiguous_sources_are_refused(block, match):
    with pytest.raises(ValueError, match=match):
        loading.check_source(block, "student")


def test_a_hub_id_at_a_pinned_commit_resolves_offline_from_the_cache(mini_world, tmp_path, monkeypatch):
    """The normal HF cache layout (models--org--name/snapshots/<commit>), read with HF_HUB_OFFLINE=1."""
    import shutil

    repo = tmp_path / "models--opdpipe--mini-teacher"
    shutil.copytree(mini_world / "teacher", repo / "snapshots" / HEX)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(HEX)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = loading.resolve_source({"hf_id": "opdpipe/mini-teacher", "revision": HEX, "cache_dir": str(tmp_path)})
    assert folder == repo / "snapshots" / HEX
    with pytest.raises(Exception, match="(?i)offline|cannot find|not found|LocalEntryNotFound"):
        loading.resolve_source({"hf_id": "opdpipe/mini-teacher", "revision": HEX[::-1], "cache_dir": str(tmp_path)})


def test_device_and_dtype_are_checked():
    with pytest.raises(ValueError, match="teacher.device = 'tpu'; allowed: auto, cpu, cuda"):
        device.check_device("tpu", "teacher")
    with pytest.raises(ValueError, match="student.dtype = 'float16'; allowed: float32, bfloat16"):
        device.resolve_dtype("float16", "student")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="student.device = 'cuda', but .* no CUDA device"):
            device.check_device("cuda", "student")
        assert device.resolve_device("auto").type == "cpu"


def test_teacher_is_frozen_in_its_dtype(mini_world):
    t = loading.load_teacher(mini_world / "teacher", {"dtype": "bfloat16", "device": "cpu"})
    assert {p.dtype for p in t.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in t.parameters()) and not t.training


def test_vocabulary_mismatch_names_the_first_differing_token(mini_world, tiny_world):
    a = vocab.load_checkpoint_tokenizer(mini_world / "teacher")
    b = vocab.load_checkpoint_tokenizer(tiny_world / "student")  # the character tokenizer
    i, ta, tb = vocab.first_vocab_difference(a, b)
    assert i == 0 and (ta, tb) == ("<|endoftext|>", "<pad>")
    with pytest.raises(ValueError, match=r"differ at id 0: teacher '<\|endoftext\|>', student '<pad>'"):
        vocab.check_vocab_agreement(a, b)
    vocab.check_vocab_agreement(a, vocab.load_checkpoint_tokenizer(mini_world / "student"))


def test_chat_rendering_and_its_arguments(mini_world):
    tok = vocab.load_checkpoint_tokenizer(mini_world / "student")
    on = chat.render_prompt(tok, "Q?\n", MINI_CHAT)
    assert on == "<|im_start|>user\nQ?\n<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert chat.render_prompt(tok, "Q?\n", {"template": "auto"}).endswith("assistant\n")  # kwargs reach it
    assert chat.render_prompt(tok, "Q?\n", {"template": "none"}) == "Q?\n"
    with pytest.raises(ValueError, match="chat.template = 'jinja'; allowed: auto, none"):
        chat.render_prompt(tok, "Q?", {"template": "jinja"})


def test_lora_targets_are_checked_and_the_merged_model_matches(mini_world, tmp_path):
    model = loading.load_student(mini_world / "student", {})
    spec = lora.check_adapter({"type": "lora", "rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    with pytest.raises(ValueError, match=r"\['qkv'\] are not Linear layers .* allowed: all-linear, down_proj"):
        lora.attach_lora(model, {**spec, "target_modules": ["q_proj", "qkv"]})
    with pytest.raises(ValueError, match=r"student.adapter: unknown key\(s\) \['r'\]"):
        lora.check_adapter({"type": "lora", "r": 4})
    peft_model = lora.attach_lora(model, spec)
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    from opdpipe.backends.runtime import save_final

    tok = vocab.load_checkpoint_tokenizer(mini_world / "student")
    save_final(peft_model, tok, tmp_path / "final")
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "final")).eval()
    ids = torch.tensor([tok("Ann has 3 pens. Gets 2. How many?\n")["input_ids"]])
    peft_model.eval()
    with torch.no_grad():
        a, b, base = plain(ids).logits, peft_model(ids).logits, loading.load_student(mini_world / "student", {})(ids).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (a - base).abs().max() > 1e-3  # the adapter changed the model: the check can fail


def test_a_lora_student_keeps_its_base_in_bf16_and_its_adapter_in_float32(mini_world):
    block = {"dtype": "bfloat16", "adapter": {"type": "lora", "rank": 4, "target_modules": "all-linear"}}
    model = lora.attach_lora(loading.load_student(mini_world / "student", block), lora.check_adapter(block["adapter"]))
    dtypes = {("lora_" in n, p.dtype) for n, p in model.named_parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}


def test_concatenated_rollout_batches_are_padded_alike():
    from opdpipe.backends.rollout import concat_rollouts
    from opdpipe.generation import Rollout

    a = Rollout([[1]], torch.tensor([[5, 6, 2]]), torch.ones(1, 3, dtype=torch.long), torch.full((1, 3), -1.0),
                torch.tensor([False]))
    b = Rollout([[1, 1]], torch.tensor([[7, 2]]), torch.ones(1, 2, dtype=torch.long), torch.full((1, 2), -2.0),
                torch.tensor([True]))
    r = concat_rollouts([a, b], pad_id=0)
    assert r.response.tolist() == [[5, 6, 2], [7, 2, 0]] and r.mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert r.logprobs.tolist() == [[-1, -1, -1], [-2, -2, 0]] and r.prompt_ids == [[1], [1, 1]]
