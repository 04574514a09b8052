"""A character-level tokenizer built locally and saved in Hugging Face format.

Teacher and student share it. Characters outside the vocabulary are an error before training,
not a silent <unk>.
"""
from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<eos>", "<unk>")
CHARSET = "\n" + "".join(c for c in string.printable if c.isprintable())  # printable ASCII + newline


def build_char_tokenizer(charset: str = CHARSET) -> PreTrainedTokenizerFast:
    chars = sorted(set(charset))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({c: len(SPECIALS) + i for i, c in enumerate(chars)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # split into single characters; [\s\S] also matches newlines (a bare '.' would not)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   model_max_length=1024, padding_side="right")


def save_tokenizer(tok: PreTrainedTokenizerFast, path: str | Path) -> None:
    tok.save_pretrained(str(path))


def load_tokenizer(path: str | Path):
    return AutoTokenizer.from_pretrained(str(path))


def check_encodable(tok, texts, where: str) -> None:
    """Raise if any character of `texts` is outside the tokenizer's vocabulary."""
    vocab = tok.get_vocab()
    missing = sorted({c for t in texts for c in t if c not in vocab})
    if missing:
        raise ValueError(f"{where}: the tokenizer cannot encode {len(missing)} character(s) {missing[:20]!r}; "
                         "extend the tokenizer charset or clean the data")
