"""Small Llama-architecture causal LMs built from a config dict, and checkpoint loading.

Llama, not Qwen2: with Qwen2Config, AutoTokenizer swaps a custom tokenizer for Qwen2Tokenizer.
transformers is imported where a function needs it: an OPD job on the embedded models never does
(load_trainable).
"""
from __future__ import annotations

from pathlib import Path

import torch

from opdpipe import fastlm, plain_llama

MODEL_KEYS = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings"}


def build_model(spec: dict, tokenizer, seed: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig

    unknown = set(spec) - MODEL_KEYS
    if unknown:
        raise ValueError(f"model config: unknown key(s) {sorted(unknown)}; allowed: {sorted(MODEL_KEYS)}")
    cfg = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                      num_key_value_heads=spec["num_attention_heads"], tie_word_embeddings=True,
                      **spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    # sampling defaults for lm-eval and generate(): plain temperature sampling, no truncation
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, top_k=None, top_p=None)
    return model


def load_model(path: str | Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no checkpoint at {path} (missing config.json); run the stage that makes it first")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    return model


def load_trainable(path: str | Path, plain: bool = True) -> torch.nn.Module:
    """An embedded checkpoint for an OPD run: a PlainLlama (opdpipe.plain_llama, no transformers import)
    when `plain`, the folder qualifies and opdpipe.fastlm is on (every pass is then fastlm's), else
    transformers' model (load_model). plain=False where transformers' forward is needed (a DDP wrapper)."""
    if plain and fastlm.enabled() and plain_llama.readable(path):
        return plain_llama.load(path)
    return load_model(path)


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model, tokenizer, path: str | Path) -> None:
    """save_pretrained (safetensors) model + tokenizer into `path`, atomically."""
    from opdpipe.provenance import atomic_dir

    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
