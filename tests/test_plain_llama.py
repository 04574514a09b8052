"""An OPD job on the embedded models without transformers (opdpipe.plain_llama, opdpipe.tokenizer.CharTokenizer):
the same parameters in the same order, the same bytes on disk, the same tokens, the same run, and the
folders it must leave to transformers."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opdpipe import fastlm, plain_llama
from opdpipe.generation import sample
from opdpipe.models import load_model, load_trainable, save_checkpoint
from opdpipe.scoring import response_logits, sequence_logprobs
from opdpipe.tokenizer import CHARSET, CharTokenizer, load_char_tokenizer, load_tokenizer
from opdpipe.trainer import RunSpec, run

FAST = {"steps": 4, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 10, "eval_every": 2,
        "eval_size": 4, "bias_every": 2, "bias_rollouts": 4, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """tiny_world's checkpoints read and written again as the workflow's stages write theirs (a tokenizer
    read from a folder, offline), with norm weights other than 1."""
    root = tmp_path_factory.mktemp("plain")
    gen = torch.Generator().manual_seed(0)
    for who in ("student", "teacher"):
        model, tok = load_model(tiny_world / who), load_tokenizer(tiny_world / who)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5, generator=gen)
                else:
                    p.add_(0.1 * torch.randn(p.shape, generator=gen))
        save_checkpoint(model, tok, root / who)
    shutil.copytree(tiny_world / "data", root / "data")
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_plain_llama_holds_transformers_parameters_in_order_and_saves_the_same_bytes(world, tmp_path):
    assert plain_llama.readable(world / "student")
    plain, hf = load_trainable(world / "student"), load_model(world / "student")
    assert type(plain) is plain_llama.PlainLlama and type(hf).__name__ == "LlamaForCausalLM"
    assert [(n, p.shape, p.requires_grad) for n, p in plain.named_parameters()] == \
        [(n, p.shape, p.requires_grad) for n, p in hf.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), hf.parameters()))
    assert plain.lm_head.weight is plain.model.embed_tokens.weight and not plain.training
    assert plain.model.embed_tokens.padding_idx == hf.model.embed_tokens.padding_idx == 0
    with torch.no_grad():  # the same update on both, then both saved
        for a, b in zip(plain.parameters(), hf.parameters()):
            step = torch.randn(a.shape, generator=torch.Generator().manual_seed(a.numel()))
            a.add_(step), b.add_(step)
    tok = load_char_tokenizer(world / "student")
    save_checkpoint(plain, tok, tmp_path / "plain")
    save_checkpoint(hf, load_tokenizer(world / "student"), tmp_path / "hf")
    assert _files(tmp_path / "plain") == _files(tmp_path / "hf")
    assert set(_files(tmp_path / "plain")) == {"config.json", "generation_config.json", "model.safetensors",
                                                "tokenizer.json", "tokenizer_config.json"}
    with pytest.raises(TypeError, match="no forward of its own.*load_model"):
        plain(input_ids=torch.zeros(1, 2, dtype=torch.long))


def test_fastlm_computes_plain_llama_as_the_transformers_model_bit_for_bit(world):
    tok = load_char_tokenizer(world / "student")
    plain, hf = load_trainable(world / "student"), load_model(world / "student")
    ctx = [p for p in tok(["1+2=", "3+44=", "5*6="])["input_ids"] for _ in range(2)]
    rolls = [sample(m, ctx, 12, tok.eos_token_id, tok.pad_token_id, generator=torch.Generator().manual_seed(3))
             for m in (plain, hf)]
    assert torch.equal(rolls[0].response, rolls[1].response) and torch.equal(rolls[0].logprobs, rolls[1].logprobs)
    r = rolls[0]
    lps = [sequence_logprobs(m, ctx, r.response, r.mask, tok.pad_token_id) for m in (plain, hf)]
    assert torch.equal(lps[0], lps[1])
    for lp in lps:
        lp.sum().backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(plain.parameters(), hf.parameters()))
    with torch.no_grad():
        fast = response_logits(plain, ctx, r.response, r.mask, tok.pad_token_id)
        with fastlm.disabled():  # the bias meter's full distributions: transformers' forward within rounding
            ref = response_logits(hf, ctx, r.response, r.mask, tok.pad_token_id)
    assert torch.allclose(fast, ref, atol=1e-5)


def _edit(folder: Path, dest: Path, config=None, generation=None, drop=None) -> Path:
    shutil.copytree(folder, dest)
    for name, change in (("config.json", config), ("generation_config.json", generation)):
        if change:
            cfg = json.loads((dest / name).read_text())
            change(cfg)
            (dest / name).write_text(json.dumps(cfg))
    if drop:
        (dest / drop).unlink()
    return dest


@pytest.mark.parametrize("config, generation, drop", [
    (lambda c: c.update(dtype="bfloat16"), None, None),
    (lambda c: c.update(tie_word_embeddings=False), None, None),
    (lambda c: c.update(attention_bias=True), None, None),
    (lambda c: c.update(num_key_value_heads=1), None, None),
    (lambda c: c.update(rope_parameters={"rope_theta": 1e4, "rope_type": "linear", "factor": 2.0}), None, None),
    (lambda c: c.update(architectures=["MistralForCausalLM"], model_type="mistral"), None, None),
    (lambda c: c.update(quantization_config={"quant_method": "bitsandbytes"}), None, None),
    (lambda c: c.update(rope_parameters=None), None, None),
    (lambda c: c.update(head_dim="16"), None, None),
    (lambda c: c.update(transformers_version="4.57.0"), None, None),
    (None, lambda g: g.update(transformers_version="4.57.0"), None),
    (None, None, "generation_config.json"),
    (None, None, "model.safetensors"),
])
def test_folders_plain_llama_could_not_save_exactly_go_to_transformers(world, tmp_path, config, generation, drop):
    assert not plain_llama.readable(_edit(world / "student", tmp_path / "m", config, generation, drop))


def test_plain_llama_only_where_fastlm_runs_every_pass(world):
    assert type(load_trainable(world / "student", plain=False)).__name__ == "LlamaForCausalLM"  # a DDP wrapper
    with fastlm.disabled():
        assert type(load_trainable(world / "student")).__name__ == "LlamaForCausalLM"


def test_char_tokenizer_encodes_decodes_and_saves_as_transformers(world, tmp_path):
    plain, hf = load_char_tokenizer(world / "student"), load_tokenizer(world / "student")
    assert type(plain) is CharTokenizer
    assert (plain.eos_token_id, plain.pad_token_id, len(plain)) == (hf.eos_token_id, hf.pad_token_id, len(hf))
    assert plain.get_vocab() == hf.get_vocab()
    g = torch.Generator().manual_seed(0)
    texts = ["".join(CHARSET[i] for i in torch.randint(len(CHARSET), (n,), generator=g).tolist())
             for n in range(0, 80, 3)] + ["a <eos> b<pad>c <unk>", "", " . , ' s n't", "x \n y", "é"]
    assert plain(texts)["input_ids"] == hf(texts)["input_ids"]
    assert [plain(t)["input_ids"] for t in texts] == [hf(t)["input_ids"] for t in texts]
    seqs = [torch.randint(len(plain), (n,), generator=g).tolist() for n in range(0, 60, 2)]
    for skip in (False, True):
        assert plain.batch_decode(seqs, skip_special_tokens=skip) == hf.batch_decode(seqs, skip_special_tokens=skip)
        assert [plain.decode(s, skip_special_tokens=skip) for s in seqs] == \
            [hf.decode(s, skip_special_tokens=skip) for s in seqs]
    plain.save_pretrained(tmp_path / "plain")
    hf.save_pretrained(tmp_path / "hf")
    assert _files(tmp_path / "plain") == _files(tmp_path / "hf")


def test_tokenizer_folders_transformers_would_save_otherwise_are_left_to_it(world, tiny_world, tmp_path, monkeypatch):
    assert not CharTokenizer.readable(tiny_world / "tokenizer")  # built, never read: no is_local in its config
    assert type(load_char_tokenizer(tiny_world / "tokenizer")).__name__ != "CharTokenizer"
    extra = shutil.copytree(world / "student", tmp_path / "extra")
    (extra / "chat_template.jinja").write_text("{{ messages }}")
    assert not CharTokenizer.readable(extra)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # transformers would write local_files_only: false
    assert not CharTokenizer.readable(world / "student")


def _spec(world, out):
    return RunSpec("math", "forward_kl", "opd_plus", 0, str(world / "student"), str(world / "teacher"),
                   str(world / "data"), str(out), FAST)


def test_an_opd_run_on_plain_models_is_the_run_on_transformers_models(world, tmp_path, monkeypatch):
    logs = {"plain": [], "hf": []}
    run(_spec(world, tmp_path / "plain"), progress=False, log=logs["plain"].append)
    import opdpipe.trainer as trainer

    monkeypatch.setattr(trainer, "load_trainable", lambda path, plain=True: load_model(path))
    monkeypatch.setattr(trainer, "load_char_tokenizer", load_tokenizer)
    run(_spec(world, tmp_path / "hf"), progress=False, log=logs["hf"].append)
    assert "models: student PlainLlama, teacher PlainLlama, tokenizer CharTokenizer" in logs["plain"]
    assert "models: student LlamaForCausalLM, teacher LlamaForCausalLM, tokenizer TokenizersBackend" in logs["hf"]
    for folder in ("final", "best"):
        assert _files(tmp_path / "plain" / folder) == _files(tmp_path / "hf" / folder)

    def rows(r):
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/") and k != "tokens_per_s"}
                for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
    assert rows("plain") == rows("hf") and any("bias/cos_expected" in r for r in rows("plain"))


def test_an_opd_job_on_the_embedded_models_never_imports_transformers(world, tmp_path):
    """The job as the workflow runs it (opdpipe.train_job), with tracking.live false: neither transformers
    nor MLflow is imported, and the job says where its curves will come from."""
    job = {"spec": _spec(world, tmp_path / "r").__dict__, "variant": "forward_kl-opd_plus", "study": "t",
           "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "task": "math", "live": False}
    code = ("import sys; from opdpipe.train_job import run_job; "
            f"run_job({job!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'mlflow')))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert "tracking.live is false: no live logging; the track rule logs the steps" in out
    assert (tmp_path / "r" / "final" / "model.safetensors").exists() and not (tmp_path / "mlflow.db").exists()


def test_weights_that_do_not_fit_the_config_are_named(world, tmp_path):
    from safetensors.torch import load_file, save_file

    good = load_file(str(world / "student" / "model.safetensors"))
    cases = [({**good, "model.norm.weight": good["model.norm.weight"][:-1]},
              r"weight model.norm.weight is \(15,\), the config asks for \(16,\)"),
             ({k: v for k, v in good.items() if k != "model.layers.0.mlp.up_proj.weight"},
              r"weight model.layers.0.mlp.up_proj.weight is missing"),
             ({**good, "model.layers.0.self_attn.q_proj.bias": torch.zeros(16)},
              r"unexpected weights \['model.layers.0.self_attn.q_proj.bias'\]")]
    for i, (weights, match) in enumerate(cases):
        bad = shutil.copytree(world / "student", tmp_path / f"bad{i}")
        save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
        with pytest.raises(ValueError, match=match):
            plain_llama.load(bad)
