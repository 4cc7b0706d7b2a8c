"""Training batches: random windows of the token stream, with a fraction of rows
replaced by pass-key samples of random length and depth.

A pass-key row starts with the sample (so its positions match evaluation, which starts
at position 0), then <|endoftext|>, then corpus text up to the row's end. Everything is
drawn from one numpy Generator whose state goes into checkpoints, so a resumed run
sees the batches an uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError

from .passkey import PasskeyTemplate


class BatchSampler:
    def __init__(
        self,
        tokens: np.ndarray,
        template: PasskeyTemplate,
        eos_id: int,
        batch_size: int,
        context: int,
        passkey_frac: float,
        seed: int,
        min_passkey_len: int = 128,
    ):
        if not 0.0 <= passkey_frac <= 0.5:
            raise ConfigError("--passkey-frac", f"must be in [0, 0.5], got {passkey_frac}")
        if len(tokens) < context + 2:
            raise ConfigError("--context", f"{context} is longer than the training corpus ({len(tokens)} tokens)")
        self.tokens = tokens
        self.template = template
        self.eos_id = eos_id
        self.batch_size = batch_size
        self.row = context + 1  # inputs are row[:-1], targets row[1:]
        self.passkey_frac = passkey_frac
        self.min_passkey_len = max(template.min_length(), min(min_passkey_len, self.row))
        self.rng = np.random.default_rng(seed)

    def _window(self, n: int) -> np.ndarray:
        start = int(self.rng.integers(0, len(self.tokens) - n + 1))
        return self.tokens[start : start + n]

    def _passkey_row(self) -> np.ndarray:
        # Lengths skew long (half of them in the top quarter of the range): the far
        # needles are the hard ones, and a uniform length gives few of them.
        span = self.row - self.min_passkey_len
        length = self.row - int(span * self.rng.random() ** 2)
        s = self.template.sample(self.rng, self.tokens, length)
        ids = np.asarray(s.prompt_ids + s.answer_ids, dtype=np.int64)
        rest = self.row - len(ids)
        if rest <= 0:
            return ids
        return np.concatenate([ids, [self.eos_id], self._window(rest - 1)])

    def next(self) -> np.ndarray:
        """int64 [batch_size, context + 1]."""
        out = np.empty((self.batch_size, self.row), dtype=np.int64)
        is_pk = self.rng.random(self.batch_size) < self.passkey_frac
        for i in range(self.batch_size):
            out[i] = self._passkey_row() if is_pk[i] else self._window(self.row)
        return out

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
