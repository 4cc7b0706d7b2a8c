"""Validated selection parameters: budgets (tokens or a fraction of the context) and
the small scalar checks every policy shares. Every failure is a ConfigError naming
the parameter, so a bad GUI field or config key is reported where it was typed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class Budget:
    """How many pages a (sequence, kv-head) may attend to.

    Numbers > 1 are tokens, numbers in (0, 1] a fraction of the context; strings may
    also say "1/8" or "12.5%". Exactly one of `tokens` / `fraction` is set. Pages are the unit of selection, so
    a budget rounds *up* to whole pages: 100 tokens at block size 16 is 7 pages, and
    a fraction f of a context of n pages is ceil(f * n) pages, which makes 100% (or
    any token budget >= the context) exactly dense."""

    tokens: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, field: str, value, allow_zero: bool = False) -> "Budget":
        if isinstance(value, Budget):
            return value
        if isinstance(value, bool) or value is None:
            raise ConfigError(field, f"expected a token count or a fraction of the context, got {value!r}")
        if isinstance(value, str):
            return cls._parse_str(field, value.strip(), allow_zero)
        if isinstance(value, int):
            if value == 1:  # numbers <= 1 are fractions (the engine config's rule): 1 = all
                return cls(fraction=1.0)
            return cls._tokens(field, value, allow_zero)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ConfigError(field, f"must be finite, got {value!r}")
            if 0.0 < value <= 1.0:
                return cls(fraction=float(value))
            if value > 1.0 and value.is_integer():
                return cls._tokens(field, int(value), allow_zero)
            if value == 0.0 and allow_zero:
                return cls(tokens=0)
            raise ConfigError(field, f"a float budget is a fraction in (0, 1] (or a whole token count), got {value!r}")
        raise ConfigError(field, f"expected a token count or a fraction of the context, got {type(value).__name__}")

    @classmethod
    def _tokens(cls, field: str, n: int, allow_zero: bool) -> "Budget":
        lo = 0 if allow_zero else 1
        if n < lo:
            raise ConfigError(field, f"token budget must be >= {lo}, got {n}")
        return cls(tokens=int(n))

    @classmethod
    def _parse_str(cls, field: str, s: str, allow_zero: bool) -> "Budget":
        try:
            if s.endswith("%"):
                f = float(s[:-1]) / 100.0
            elif "/" in s or "." in s:
                f = float(Fraction(s))
            else:
                return cls._tokens(field, int(s), allow_zero)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(field, f"{s!r} is not a token count (256), a fraction (1/8, 0.125) or a percentage (12.5%)") from None
        if not (0.0 < f <= 1.0):
            if f == 0.0 and allow_zero:
                return cls(tokens=0)
            raise ConfigError(field, f"fraction must be in (0, 1], got {s!r}")
        return cls(fraction=f)

    def pages(self, seq_lens: torch.Tensor, block_size: int) -> torch.Tensor:
        """int64 [B]: the budget in pages for each sequence (not yet capped at its context)."""
        if self.tokens is not None:
            k = -(-self.tokens // block_size)
            return torch.full_like(seq_lens, k, dtype=torch.long)
        n = (seq_lens.long() + block_size - 1) // block_size
        # the epsilon keeps 0.125 * 128 at 16, not 17, after float rounding
        return torch.ceil(n.double() * self.fraction - 1e-9).long()

    def max_pages(self, max_context_pages: int, block_size: int) -> int:
        """Host-side upper bound of `pages()` for contexts of at most
        `max_context_pages` pages: sizes outputs without a device sync."""
        if self.tokens is not None:
            return -(-self.tokens // block_size)
        return math.ceil(max_context_pages * self.fraction - 1e-9)

    def covers(self, max_context_pages: int, block_size: int) -> bool:
        """True when every context of at most that many pages fits the budget whole."""
        return self.max_pages(max_context_pages, block_size) >= max_context_pages

    def __str__(self) -> str:
        if self.tokens is not None:
            return str(self.tokens)
        fr = Fraction(self.fraction).limit_denominator(64)
        if abs(float(fr) - self.fraction) < 1e-12:
            return f"{fr.numerator}/{fr.denominator}"
        return f"{self.fraction:g}"


def check_int(field: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(field, f"expected an integer, got {value!r}")
    try:
        v = int(value) if not isinstance(value, float) else value
    except ValueError:
        raise ConfigError(field, f"expected an integer, got {value!r}") from None
    if isinstance(v, float):
        if not v.is_integer():
            raise ConfigError(field, f"expected an integer, got {value!r}")
        v = int(v)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(field, f"must be {rng}, got {v}")
    return v


def check_float(field: str, value, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    if isinstance(value, bool):
        raise ConfigError(field, f"expected a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(field, f"expected a number, got {value!r}") from None
    bad = (not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi))
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ConfigError(field, f"must be in {lb}{lo:g}, {hi:g}{rb}, got {value!r}")
    return v


def check_choice(field: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise ConfigError(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value.strip().lower()


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def check_bool(field: str, value) -> bool:
    """A bool, or its spelling on a command line (true/false, 1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    raise ConfigError(field, f"expected true or false, got {value!r}")
