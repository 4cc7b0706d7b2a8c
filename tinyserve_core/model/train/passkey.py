"""Synthetic pass-key retrieval samples (the needle-in-a-haystack test of Quest and
Landmark Attention), built at token level so a sample has an exact length.

A sample is filler text with a needle at a chosen depth and a question at the end:

    <filler ...> The pass key is 71432. Remember it. 71432 is the pass key. <filler ...>
    What is the pass key? The pass key is 71432

The tokenizer splits digits one per token *before* anything else, so every piece below
tokenizes the same alone as inside the full text: concatenating their ids is exactly
the tokenization of the concatenated text. Training (5-10% of rows), evaluation and the
serving workloads all build samples here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError

KEY_DIGITS = 5
_NEEDLE_HEAD = "\n\nThe pass key is "
_NEEDLE_MID = ". Remember it. "
_NEEDLE_TAIL = " is the pass key.\n\n"
_QUESTION = "\n\nWhat is the pass key? The pass key is "


@dataclass(frozen=True)
class PasskeySample:
    prompt_ids: list[int]  # ends right before the key's first digit
    answer_ids: list[int]  # the key's KEY_DIGITS digit tokens
    key: str
    depth: float  # where the needle starts, as a fraction of the filler
    needle_pos: int  # token index of the needle's first token

    @property
    def length(self) -> int:
        """Tokens of prompt plus answer: what the model must hold in context."""
        return len(self.prompt_ids) + len(self.answer_ids)


class PasskeyTemplate:
    """The needle/question pieces as token ids for one tokenizer (a `tokenizers.Tokenizer`)."""

    def __init__(self, tok):
        def ids(text: str) -> list[int]:
            return tok.encode(text, add_special_tokens=False).ids

        self.head, self.mid, self.tail, self.question = (ids(s) for s in (_NEEDLE_HEAD, _NEEDLE_MID, _NEEDLE_TAIL, _QUESTION))
        self.digit_ids = []
        for d in "0123456789":
            got = ids(d)
            if len(got) != 1:
                raise ConfigError("tokenizer", f"digit {d!r} is not a single token; the pass-key test needs split digits")
            self.digit_ids.append(got[0])

    def key_ids(self, key: str) -> list[int]:
        return [self.digit_ids[int(c)] for c in key]

    def overhead(self) -> int:
        """Tokens of a sample that are not filler."""
        return len(self.head) + len(self.mid) + len(self.tail) + len(self.question) + 3 * KEY_DIGITS

    def min_length(self) -> int:
        return self.overhead() + 1

    def build(self, filler: np.ndarray, key: str, depth: float) -> PasskeySample:
        """A sample whose filler is exactly `filler` (token ids), needle at `depth`."""
        if len(key) != KEY_DIGITS or not key.isdigit():
            raise ConfigError("key", f"must be {KEY_DIGITS} digits, got {key!r}")
        if not 0.0 <= depth <= 1.0:
            raise ConfigError("depth", f"must be in [0, 1], got {depth}")
        k = self.key_ids(key)
        needle = self.head + k + self.mid + k + self.tail
        cut = int(round(depth * len(filler)))
        filler = [int(t) for t in filler]
        prompt = filler[:cut] + needle + filler[cut:] + self.question
        return PasskeySample(prompt, k, key, depth, cut)

    def sample(self, rng: np.random.Generator, source: np.ndarray, length: int, depth: float | None = None) -> PasskeySample:
        """A sample of exactly `length` tokens (prompt + answer), filler drawn from a random
        offset of `source`, key and (unless given) depth drawn from `rng`."""
        n_fill = length - self.overhead()
        if n_fill < 1:
            raise ConfigError("length", f"must be at least {self.min_length()} tokens, got {length}")
        if n_fill > len(source):
            raise ConfigError("length", f"{length} needs {n_fill} filler tokens; the source has {len(source)}")
        start = int(rng.integers(0, len(source) - n_fill + 1))
        key = str(int(rng.integers(10 ** (KEY_DIGITS - 1), 10**KEY_DIGITS)))
        if depth is None:
            depth = float(rng.random())
        return self.build(source[start : start + n_fill], key, depth)


def make_samples(tok, source: np.ndarray, n: int, length: int, seed: int) -> list[PasskeySample]:
    """`n` samples of `length` tokens with depths spread evenly over [0, 1] (so accuracy
    by depth is measured on equal-sized groups) and random keys and filler offsets."""
    template = PasskeyTemplate(tok)
    rng = np.random.default_rng(seed)
    depths = (np.arange(n) + 0.5) / n if n > 0 else []
    return [template.sample(rng, source, length, float(d)) for d in depths]
