"""Prompt text: a folder of plain text read as a ring of words, cut into passages of
an exact token length, and the model tokenizer as a `tokenize` callable."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...loaders import MiB, read_text
from ...resources import asset_path

Tokenize = Callable[[str], list[int]]

TEXT_SUFFIXES = (".txt", ".md", ".rst")
DEFAULT_TEXT_DIR = asset_path("text")
# Held-out evaluation text (assets/text/heldout) is never prompt text: a folder of this
# name is skipped wherever it sits under a text folder.
HELDOUT_DIR = "heldout"
# Prompt text is held in memory as a list of words (about 10x the bytes): the shipped
# folder is under 1 MB, and a folder past this is no prompt source but a mistake.
MAX_TEXT_DIR_BYTES = 64 * MiB

_WORD = re.compile(r"\S+\s*")
_NON_SPACE = re.compile(r"\S*")


class TextCorpus:
    """Words of a folder of plain text, read as one long ring: a passage may start at
    any word and wrap around the end. Each word keeps its trailing whitespace so that
    passages keep the source's spacing and paragraph breaks."""

    def __init__(self, words: list[str], source: str = "<memory>"):
        if not words:
            raise ConfigError("text_dir", f"{source}: no text found")
        self.words = words
        self.source = source
        # passages start where a sentence starts, as a real prompt would
        starts = [i for i in range(1, len(words))
                  if words[i - 1].rstrip()[-1] in ".?!:" and words[i][0].isupper()]
        self.sentence_starts = np.array(starts or [0], dtype=np.int64)

    @classmethod
    def from_dir(cls, path: str | Path | None = None) -> "TextCorpus":
        return _load_corpus(str(Path(path).resolve()) if path is not None else str(DEFAULT_TEXT_DIR))

    def __len__(self) -> int:
        return len(self.words)

    def text(self, start: int, count: int) -> str:
        n = len(self.words)
        start %= n
        idx = np.arange(start, start + count) % n
        return "".join(self.words[i] for i in idx).rstrip()

    def passage(self, rng: np.random.Generator, num_tokens: int,
                tokenize: Tokenize | None) -> tuple[str, list[int] | None]:
        """Text from a random sentence start on, `num_tokens` long (see module docstring)."""
        start = int(self.sentence_starts[rng.integers(len(self.sentence_starts))])
        return self.cut(start, num_tokens, tokenize)

    def cut(self, start: int, num_tokens: int,
            tokenize: Tokenize | None) -> tuple[str, list[int] | None]:
        if num_tokens <= 0:
            return "", [] if tokenize is not None else None
        if tokenize is None:
            return self.text(start, num_tokens), None
        with_offsets = getattr(tokenize, "with_offsets", None)
        # Enough words for num_tokens tokens (a word is rarely under one token).
        hi = max(1, num_tokens)
        while True:
            text = self.text(start, hi)
            ids, offsets = with_offsets(text) if with_offsets else (tokenize(text), None)
            if len(ids) >= num_tokens:
                break
            if hi > 64 * num_tokens + 64 * len(self.words):
                raise ConfigError("text_dir", f"{self.source}: text yields too few tokens")
            hi *= 2
        if offsets is not None:
            # one pass: end the text with the word that holds the last kept token
            end = _NON_SPACE.match(text, offsets[num_tokens - 1][1]).end()
            return text[:end].rstrip(), list(ids[:num_tokens])
        lo = 0  # bisect the word count: text(lo) too short (or empty), text(hi) long enough
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if len(tokenize(self.text(start, mid))) >= num_tokens:
                hi = mid
            else:
                lo = mid
        text = self.text(start, hi)
        return text, list(tokenize(text))[:num_tokens]


@functools.lru_cache(maxsize=8)
def _load_corpus(path: str) -> TextCorpus:
    root = Path(path)
    if not root.is_dir():
        raise ConfigError("text_dir", f"{root} is not a folder")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                   and HELDOUT_DIR not in p.relative_to(root).parts[:-1]
                   and not p.name.upper().startswith(("README", "LICENSE", "COPYING")))
    words: list[str] = []
    total = 0
    for p in files:
        # a non-UTF-8 or oversized file is named with its line (InputFileError), not
        # read whole or silently replaced
        text = read_text(p, max_bytes=MAX_TEXT_DIR_BYTES, field="text_dir")
        total += len(text)
        if total > MAX_TEXT_DIR_BYTES:
            raise ConfigError("text_dir", f"{root}: its text files hold more than the limit of "
                                          f"{MAX_TEXT_DIR_BYTES} characters")
        words.extend(_WORD.findall(text.strip() + "\n\n"))
    if not words:
        raise ConfigError("text_dir", f"{root} holds no {'/'.join(TEXT_SUFFIXES)} files with text")
    return TextCorpus(words, str(root))


class ModelTokenize:
    """The model tokenizer as a `tokenize` callable (no special tokens). When it wraps
    a Hugging Face `tokenizers.Tokenizer` it also offers `with_offsets`, which lets
    `TextCorpus.cut` find the word boundary from one encoding instead of a search."""

    def __init__(self, tokenizer: Any):
        self._tok = tokenizer
        hf = getattr(tokenizer, "tokenizer", None)
        if hf is not None and hasattr(hf, "encode_batch"):
            self._hf = hf
        else:
            self._hf = None
            self.with_offsets = None  # type: ignore[assignment]

    def __call__(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self._hf.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets
