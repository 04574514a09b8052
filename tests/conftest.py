"""Shared fixtures: a tiny world (data, tokenizer, untrained-but-real Llama checkpoints) in seconds."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "max_position_embeddings": 160}
TASK_SPEC = {"source": "synthetic", "knobs": {"min_steps": 1, "max_steps": 1, "max_operand": 5},
             "sizes": {"train": 40, "validation": 8, "test": 8}}


class Killed(Exception):
    """A training run cut short by `kill_at` (as a kill between two steps would)."""


def kill_at(n: int):
    """A trainer callback that stops the run after step `n`."""
    def cb(step, metrics):
        if step == n:
            raise Killed
    return cb


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """data/, tokenizer/, teacher/ and student/ checkpoints for the math task (seconds to build)."""
    import torch

    from opdpipe import data
    from opdpipe.models import build_model, save_checkpoint
    from opdpipe.tokenizer import build_char_tokenizer, save_tokenizer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("world")
    data.run("math", TASK_SPEC, 0, root / "data")
    tok = build_char_tokenizer()
    save_tokenizer(tok, root / "tokenizer")
    save_checkpoint(build_model(TINY, tok, seed=1), tok, root / "teacher")
    save_checkpoint(build_model(TINY, tok, seed=2), tok, root / "student")
    return root

MINI_MODEL = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 128, "max_position_embeddings": 256}
MINI_SPEC = {"vocab_size": 400, "chat_kwargs": {"enable_thinking": False},
             "teacher": {"model": MINI_MODEL, "steps": 5, "batch_size": 8, "lr": 1e-3},
             "student": {"model": MINI_MODEL, "steps": 5, "batch_size": 8, "lr": 1e-3}}
MINI_CHAT = {"template": "auto", "kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="session")
def mini_world(tiny_world, tmp_path_factory):
    """A hub-format Qwen3 teacher / student pair with a BPE tokenizer and a chat template (seconds)."""
    import torch

    from opdpipe.backends import minipair
    from opdpipe.data import read_jsonl

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mini")
    minipair.build(read_jsonl(tiny_world / "data" / "train.jsonl"), MINI_SPEC, root, seed=0, log=lambda *a: None)
    return root
