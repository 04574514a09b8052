"""A small hub-format teacher / student pair built locally (the `mini` study's stand-in for Qwen3-8B).

Both are Qwen3-architecture causal LMs (head_dim 32, so a vLLM CPU backend can serve them) with
one byte-level BPE tokenizer trained here on the task corpus with the `tokenizers` library, and
a Qwen3-style chat template. Each is written with `save_pretrained` into a folder laid out like a
hub snapshot (config.json, generation_config.json, model.safetensors, tokenizer files, chat
template), so everything downstream treats them as pretrained models from a path.

The teacher is trained on the reference solutions through the chat template (it plays the
instruction-tuned model); the student is trained briefly on plain text (the base model).
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast, Qwen3Config

from opdpipe.backends.chat import render_prompt
from opdpipe.provenance import atomic_dir, atomic_write_text

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# Qwen3's template, reduced to what the tasks use: user / assistant turns, generation prompt, and
# enable_thinking=false writing an empty think block as Qwen3 does.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}")
MODEL_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "head_dim", "max_position_embeddings")


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `texts` (every byte is in the alphabet: no text is unencodable)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=2048, padding_side="right")


def build_qwen3(spec: dict, tok, seed: int) -> torch.nn.Module:
    unknown = set(spec) - set(MODEL_KEYS)
    if unknown:
        raise ValueError(f"mini_pair model: unknown key(s) {sorted(unknown)}; allowed: {', '.join(MODEL_KEYS)}")
    if spec.get("head_dim", 32) < 32:
        raise ValueError(f"mini_pair model.head_dim = {spec['head_dim']!r}; allowed: >= 32 (vLLM's CPU backend)")
    cfg = Qwen3Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None, tie_word_embeddings=True, **{"head_dim": 32, **spec})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               top_k=None, top_p=None)
    return model


def save_snapshot(model, tok, folder: Path, card: str) -> None:
    with atomic_dir(folder) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        atomic_write_text(tmp / "README.md", card)


def build(train: list[dict], spec: dict, out: str | Path, seed: int, log=print) -> dict:
    """Tokenizer, teacher and student into <out>/teacher and <out>/student. Returns a manifest."""
    from opdpipe.sft import train_sft

    out = Path(out)
    corpus = [e["prompt"] + e["target"] for e in train]
    tok = train_tokenizer(corpus, spec["vocab_size"])
    chat = {"template": "auto", "kwargs": spec.get("chat_kwargs", {})}
    stats = {}
    for role, seed_offset in (("teacher", 1), ("student", 2)):
        r = spec[role]
        model = build_qwen3(r["model"], tok, seed + seed_offset)
        rows = train[:r.get("num_examples", len(train))]
        # the teacher learns the chat format (instruction-tuned); the student plain text (a base model)
        pairs = [(render_prompt(tok, e["prompt"], chat) if role == "teacher" else e["prompt"], e["target"])
                 for e in rows]
        stats[role] = train_sft(model, tok, pairs, r["steps"], r["batch_size"], r["lr"], seed + seed_offset,
                                log=log)
        stats[role]["num_params"] = sum(p.numel() for p in model.parameters())
        save_snapshot(model, tok, out / role, f"# opdpipe mini {role}\n\nQwen3 architecture, "
                      f"{stats[role]['num_params']} parameters, BPE vocabulary {len(tok)}; built by "
                      "opdpipe.backends.minipair.\n")
        log(f"mini {role}: {stats[role]['num_params']} parameters saved to {out / role}")
    return {"vocab_size": len(tok), "train": stats}
