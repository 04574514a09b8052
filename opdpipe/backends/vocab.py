"""The tokenizer of a pretrained checkpoint, and teacher / student vocabulary agreement.

On-policy distillation scores the student's sampled token ids with the teacher: both must map
every id the student can emit to the same token (Qwen3-8B and Qwen3-8B-Base do).
"""
from __future__ import annotations

from pathlib import Path


def load_checkpoint_tokenizer(folder: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)


def _id_to_token(tok) -> dict[int, str]:
    return {i: t for t, i in tok.get_vocab().items()}


def first_vocab_difference(teacher_tok, student_tok) -> tuple[int, str | None, str | None] | None:
    """(id, teacher token, student token) at the lowest id where the two differ; None if they agree."""
    t, s = _id_to_token(teacher_tok), _id_to_token(student_tok)
    for i in range(max(len(t), len(s), max(t, default=-1) + 1, max(s, default=-1) + 1)):
        if t.get(i) != s.get(i):
            return i, t.get(i), s.get(i)
    return None


def check_vocab_agreement(teacher_tok, student_tok, where: str = "teacher / student") -> None:
    diff = first_vocab_difference(teacher_tok, student_tok)
    if diff is not None:
        i, a, b = diff
        raise ValueError(f"{where}: the tokenizers' vocabularies differ at id {i}: teacher {a!r}, student {b!r} "
                         "(the teacher must score the student's token ids; use a pair that shares one tokenizer)")
