"""The embedded Llama checkpoints without transformers' modeling code, for OPD jobs.

Every pass of an OPD job on the embedded models runs through opdpipe.fastlm, which reads only the
module's parameters and a few config values; importing transformers' modeling code and building
LlamaForCausalLM cost about 1.3 s of each such job (opdpipe.tokenizer.CharTokenizer saves 2 s
more). PlainLlama holds the same parameters under the same names, registered in the same order as
LlamaForCausalLM's (AdamW, gradient clipping and the optimizer's saved state see the same list),
and its `save_pretrained` writes the folder transformers writes: config.json and
generation_config.json as read, the weights through safetensors with transformers' metadata
(tests/test_plain_llama.py holds every file byte-equal to LlamaForCausalLM.save_pretrained's).

A folder qualifies (`readable`) only when its config has exactly the keys the embedded models'
configs have, written by the installed transformers, with values fastlm computes exactly;
anything else loads through transformers (opdpipe.models.load_model). PlainLlama has no forward:
a caller that needs transformers' forward (the reference path, a DDP wrapper) loads with load_model.
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

WEIGHTS = "model.safetensors"
CONFIG_FILES = ("config.json", "generation_config.json")
CONFIG_KEYS = frozenset({
    "architectures", "attention_bias", "attention_dropout", "bos_token_id", "dtype", "eos_token_id", "head_dim",
    "hidden_act", "hidden_size", "initializer_range", "intermediate_size", "max_position_embeddings", "mlp_bias",
    "model_type", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "pad_token_id",
    "pretraining_tp", "rms_norm_eps", "rope_parameters", "tie_word_embeddings", "transformers_version",
    "use_cache", "vocab_size"})


def readable(path: str | Path) -> bool:
    """True when `path` holds an embedded-model checkpoint PlainLlama reads and saves exactly."""
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
        gen = json.loads((path / "generation_config.json").read_text())
    except (OSError, ValueError):
        return False
    installed = metadata.version("transformers")  # save_pretrained writes its own version into both files
    try:
        return (set(cfg) == CONFIG_KEYS and cfg["transformers_version"] == installed
                and gen.get("transformers_version") == installed and (path / WEIGHTS).is_file()
                and cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
                and cfg["dtype"] == "float32" and cfg["hidden_act"] == "silu" and cfg["tie_word_embeddings"] is True
                and cfg["attention_bias"] is False and cfg["mlp_bias"] is False and cfg["attention_dropout"] == 0
                and cfg["pretraining_tp"] == 1 and cfg["num_key_value_heads"] == cfg["num_attention_heads"]
                and cfg["head_dim"] * cfg["num_attention_heads"] == cfg["hidden_size"]
                and cfg["rope_parameters"].keys() == {"rope_theta", "rope_type"}
                and cfg["rope_parameters"]["rope_type"] == "default")
    except (TypeError, AttributeError):  # a value of another type (a list, null, a string): not ours
        return False


class _Weight(nn.Module):
    """A module holding one `weight` parameter: a projection's, a norm's or the embedding's (with its
    padding_idx, as nn.Embedding has). Built from the loaded tensor: no initialisation is run."""

    def __init__(self, weight: torch.Tensor, padding_idx: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.padding_idx = padding_idx


def _children(module: nn.Module, **children: nn.Module) -> nn.Module:
    for name, child in children.items():
        setattr(module, name, child)
    return module


class PlainLlama(nn.Module):
    """LlamaForCausalLM's parameters (tied output head) and config values, read from and saved to a
    `save_pretrained` folder; the passes are opdpipe.fastlm's."""

    def __init__(self, files: dict[str, bytes], weights: dict[str, torch.Tensor]):
        super().__init__()
        self.files = files  # the config files as read: save_pretrained writes them back
        self.config = c = SimpleNamespace(**json.loads(files["config.json"]))
        D, F, V = c.hidden_size, c.intermediate_size, c.vocab_size
        shapes = {"embed_tokens": (V, D), "norm": (D,), "q_proj": (D, D), "k_proj": (D, D), "v_proj": (D, D),
                  "o_proj": (D, D), "gate_proj": (F, D), "up_proj": (F, D), "down_proj": (D, F),
                  "input_layernorm": (D,), "post_attention_layernorm": (D,)}
        left = dict(weights)

        def take(prefix: str, name: str) -> _Weight:
            key = f"{prefix}{name}.weight"
            if key not in left or tuple(left[key].shape) != shapes[name]:
                got = tuple(left[key].shape) if key in left else "missing"
                raise ValueError(f"{WEIGHTS}: weight {key} is {got}, the config asks for {shapes[name]}")
            return _Weight(left.pop(key), c.pad_token_id if name == "embed_tokens" else None)

        def layer(i: int) -> nn.Module:  # in LlamaDecoderLayer's order: attention, MLP, the two norms
            p = f"model.layers.{i}."
            return _children(nn.Module(),
                             self_attn=_children(nn.Module(), **{n: take(p + "self_attn.", n)
                                                                 for n in ("q_proj", "k_proj", "v_proj", "o_proj")}),
                             mlp=_children(nn.Module(), **{n: take(p + "mlp.", n)
                                                           for n in ("gate_proj", "up_proj", "down_proj")}),
                             input_layernorm=take(p, "input_layernorm"),
                             post_attention_layernorm=take(p, "post_attention_layernorm"))

        self.model = _children(nn.Module(), embed_tokens=take("model.", "embed_tokens"),
                               layers=nn.ModuleList(layer(i) for i in range(c.num_hidden_layers)),
                               norm=take("model.", "norm"))
        if left:
            raise ValueError(f"{WEIGHTS}: unexpected weights {sorted(left)}")
        self.lm_head = _children(nn.Module(), weight=self.model.embed_tokens.weight)  # tied, as the config says

    def forward(self, *args, **kwargs):
        raise TypeError("PlainLlama has no forward of its own (its passes are opdpipe.fastlm's); "
                        "load the checkpoint with opdpipe.models.load_model for transformers' forward")

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (path / name).write_bytes(data)
        weights = {k: v.detach().contiguous() for k, v in self.state_dict().items() if k != "lm_head.weight"}
        save_file(weights, str(path / WEIGHTS), metadata={"format": "pt"})  # as transformers does: tied head left out


def load(path: str | Path) -> PlainLlama:
    """The checkpoint at `path` (readable(path) must hold) in a PlainLlama, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    return PlainLlama({name: (path / name).read_bytes() for name in CONFIG_FILES},
                      load_file(str(path / WEIGHTS))).eval()
