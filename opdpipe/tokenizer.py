"""A character-level tokenizer built locally and saved in Hugging Face format.

Teacher and student share it. Characters outside the vocabulary are an error before training,
not a silent <unk>.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

SPECIALS = ("<pad>", "<eos>", "<unk>")
CHARSET = "\n" + "".join(c for c in string.printable if c.isprintable())  # printable ASCII + newline


def build_char_tokenizer(charset: str = CHARSET) -> "PreTrainedTokenizerFast":
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(charset))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({c: len(SPECIALS) + i for i, c in enumerate(chars)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # split into single characters; [\s\S] also matches newlines (a bare '.' would not)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   model_max_length=1024, padding_side="right")


def save_tokenizer(tok: "PreTrainedTokenizerFast", path: str | Path) -> None:
    tok.save_pretrained(str(path))


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def check_encodable(tok, texts, where: str) -> None:
    """Raise if any character of `texts` is outside the tokenizer's vocabulary."""
    vocab = tok.get_vocab()
    missing = sorted({c for t in texts for c in t if c not in vocab})
    if missing:
        raise ValueError(f"{where}: the tokenizer cannot encode {len(missing)} character(s) {missing[:20]!r}; "
                         "extend the tokenizer charset or clean the data")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OTHER_TOKENIZER_FILES = ("special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                         "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model")
# tokenizer_config.json as transformers writes it for the char tokenizer read from a folder: `local_files_only`
# records the offline mode it was read in (the workflow's jobs and the tests run offline)
CHAR_CONFIG = {"backend": "tokenizers", "eos_token": "<eos>", "is_local": True, "model_max_length": 1024,
               "pad_token": "<pad>", "padding_side": "right", "tokenizer_class": "TokenizersBackend",
               "unk_token": "<unk>"}


class CharTokenizer:
    """The embedded char tokenizer through `tokenizers` alone: what an OPD job asks of transformers'
    tokenizer (encoding, batch_decode, special ids, vocabulary, save_pretrained) with the same results
    (tests/test_plain_llama.py), without importing transformers (about 2 s of every job). Only a folder
    whose tokenizer_config.json is the one transformers would write on saving it here and now qualifies
    (`readable`): its save_pretrained writes the files as read."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.files = {name: (path / name).read_bytes() for name in TOKENIZER_FILES}
        cfg = json.loads(self.files["tokenizer_config.json"])
        self._tok = Tokenizer.from_str(self.files["tokenizer.json"].decode())
        self.eos_token_id = self._tok.token_to_id(cfg["eos_token"])
        self.pad_token_id = self._tok.token_to_id(cfg["pad_token"])

    @staticmethod
    def readable(path: str | Path) -> bool:
        path = Path(path)
        try:
            cfg = json.loads((path / "tokenizer_config.json").read_text())
            specials = {t["content"] for t in json.loads((path / "tokenizer.json").read_text())["added_tokens"]
                        if t["special"]}
        except (OSError, ValueError, KeyError, TypeError):
            return False
        from huggingface_hub import constants

        return cfg == {**CHAR_CONFIG, "local_files_only": constants.HF_HUB_OFFLINE} and specials == set(SPECIALS) \
            and not any((path / name).exists() for name in OTHER_TOKENIZER_FILES)

    def __call__(self, text: str | list[str]) -> dict:
        batch = not isinstance(text, str)
        ids = [e.ids for e in self._tok.encode_batch(list(text) if batch else [text])]
        return {"input_ids": ids if batch else ids[0]}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, seqs: list[list[int]], skip_special_tokens: bool = False) -> list[str]:
        return self._tok.decode_batch([list(s) for s in seqs], skip_special_tokens=skip_special_tokens)

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (path / name).write_bytes(data)


def load_char_tokenizer(path: str | Path):
    """The tokenizer at `path`: a CharTokenizer where the folder qualifies, else transformers' (load_tokenizer)."""
    return CharTokenizer(path) if CharTokenizer.readable(path) else load_tokenizer(path)
