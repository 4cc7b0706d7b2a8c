"""Tokenizer: a `tokenizers.Tokenizer` plus the special-token ids a server needs.

eos/bos ids come from generation_config.json, then config.json, then the token strings
in tokenizer_config.json, the order transformers' generate() honours."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from ..errors import ModelLoadError
from ..loaders import MiB, load_json, read_text

# The largest published tokenizer.json files are ~35 MB (Gemma's 256k vocabulary).
MAX_TOKENIZER_BYTES = 128 * MiB
# generation_config.json / tokenizer_config.json: KBs (chat templates make a few hundred).
MAX_SIDE_FILE_BYTES = 16 * MiB


class Tokenizer:
    def __init__(self, tokenizer: _HFTokenizer, eos_token_ids: list[int] | None = None,
                 bos_token_id: int | None = None):
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids or [])
        self.bos_token_id = bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.eos_token_ids[0] if self.eos_token_ids else None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        f = path / "tokenizer.json"
        if not f.exists():
            raise ModelLoadError(str(f), "missing: a model folder needs a tokenizer.json")
        text = read_text(f, max_bytes=MAX_TOKENIZER_BYTES)
        try:
            tok = _HFTokenizer.from_str(text)
        except Exception as e:  # the Rust library raises plain Exception on bad files
            raise ModelLoadError(str(f), f"cannot parse tokenizer: {_one_line(e)}") from None
        size = tok.get_vocab_size(with_added_tokens=True)
        eos: list[int] = []
        bos = None
        for name in ("generation_config.json", "config.json"):
            src = path / name
            d = _read_json(src)
            if not eos and d.get("eos_token_id") is not None:
                eos = _ids(src, "eos_token_id", d["eos_token_id"], size)
            if bos is None and d.get("bos_token_id") is not None:
                bos = _ids(src, "bos_token_id", d["bos_token_id"], size, single=True)[0]
        tc = _read_json(path / "tokenizer_config.json")
        if not eos and (t := _token_str(tc.get("eos_token"))) is not None:
            tid = tok.token_to_id(t)
            eos = [tid] if tid is not None else []
        if bos is None and (t := _token_str(tc.get("bos_token"))) is not None:
            bos = tok.token_to_id(t)
        return cls(tok, eos, bos)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path / "tokenizer.json"))
        tc = {"tokenizer_class": "PreTrainedTokenizerFast"}
        id_to = self.tokenizer.id_to_token
        if self.eos_token_id is not None:
            tc["eos_token"] = id_to(self.eos_token_id)
        if self.bos_token_id is not None:
            tc["bos_token"] = id_to(self.bos_token_id)
        (path / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n")


def _token_str(t) -> str | None:
    if isinstance(t, dict):  # AddedToken serialised as {"content": ...}
        t = t.get("content")
    return t if isinstance(t, str) else None


def _read_json(f: Path) -> dict:
    if not f.exists():
        return {}
    d = load_json(f, max_bytes=MAX_SIDE_FILE_BYTES, field="json")
    return d if isinstance(d, dict) else {}


def _ids(f: Path, field: str, v, vocab_size: int, single: bool = False) -> list[int]:
    """A token id, or a list of them where HF allows one (eos), each inside the tokenizer's
    vocabulary."""
    ids = v if isinstance(v, list) and not single else [v]
    kind = "a token id (integer)" if single else "a token id (integer) or a list of them"
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise ModelLoadError(str(f), f"must be {kind}, got {str(v)[:60]}", field=field)
    for t in ids:
        if not 0 <= t < vocab_size:
            raise ModelLoadError(str(f), f"token id {t} is outside the tokenizer's vocabulary "
                                 f"(0..{vocab_size - 1})", field=field)
    return ids


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:200]
