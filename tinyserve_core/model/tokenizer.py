"""Tokenizer: a `tokenizers.Tokenizer` plus the special-token ids a server needs.

eos/bos ids come from generation_config.json, then config.json, then the token strings
in tokenizer_config.json, the order transformers' generate() honours."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from ..errors import ModelLoadError


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
        if not f.is_file():
            raise ModelLoadError(str(f), "missing: a model folder needs a tokenizer.json")
        try:
            tok = _HFTokenizer.from_file(str(f))
        except Exception as e:  # the Rust library raises plain Exception on bad files
            raise ModelLoadError(str(f), f"cannot parse tokenizer: {e}") from None
        eos: list[int] = []
        bos = None
        for name in ("generation_config.json", "config.json"):
            d = _read_json(path / name)
            if not eos and d.get("eos_token_id") is not None:
                e = d["eos_token_id"]
                eos = [int(x) for x in (e if isinstance(e, list) else [e])]
            if bos is None and isinstance(d.get("bos_token_id"), int):
                bos = d["bos_token_id"]
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
    if not f.is_file():
        return {}
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(str(f), f"not valid JSON: {e}") from None
    return d if isinstance(d, dict) else {}
