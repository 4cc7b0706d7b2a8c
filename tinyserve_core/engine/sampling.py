"""Sampling parameters and the batched sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0     # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0               # 0 = off
    seed: int | None = None
    max_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()
    n: int = 1                   # parallel samples: fork from the prompt, share its blocks
    ignore_eos: bool = False

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise ConfigError("temperature", f"must be a number >= 0, got {self.temperature!r}")
        if not (0 < self.top_p <= 1):
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise ConfigError("top_k", f"must be an integer >= 0, got {self.top_k!r}")
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise ConfigError("max_tokens", f"must be an integer >= 1, got {self.max_tokens!r}")
        if not (isinstance(self.n, int) and 1 <= self.n <= 64):
            raise ConfigError("n", f"must be an integer from 1 to 64, got {self.n!r}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# -- the counter-based random stream ---------------------------------------------------
# Every number is a 32-bit value held in int64; products are split into 16-bit halves so
# no intermediate exceeds 2**49: nothing overflows, so Python ints, CPU tensors and CUDA
# tensors compute bit-identical streams (signed int64 overflow is not relied on).
_MASK32 = 0xFFFFFFFF


def _mul32(x, c: int):
    """x * c mod 2**32 for a 32-bit x (int or int64 tensor) and a 32-bit constant c."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + ((x * hi) & 0xFFFF) * 65_536) & _MASK32


def _mix32(x):
    """Wellons' lowbias32 finalizer: a bijection on 32 bits with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


Stream = tuple[int, int, int]   # (seed, sample index, tokens sampled so far)


def stream_keys(seed: int, sample_index: int, counter: int) -> tuple[int, int]:
    """Two 32-bit keys for one draw of one sequence, from its seed (any size), its
    sample index among n siblings and the number of tokens it sampled before."""
    seed %= 2**64
    h = _mix32(seed & _MASK32)
    for word in (seed >> 32, sample_index & _MASK32, counter & _MASK32):
        h = _mix32(h ^ _mix32(word ^ 0x9E3779B9))
    return h, _mix32(h ^ 0x85EBCA6B)


def stream_keys_batch(streams: list[Stream]) -> np.ndarray:
    """int64 [len(streams), 2]: `stream_keys` of every stream at once, with numpy array
    arithmetic (the same 32-bit steps, so the same keys): a batch costs a few dozen
    array operations instead of seven Python hash rounds per sequence."""
    if not streams:
        return np.zeros((0, 2), np.int64)
    seeds = np.array([s[0] % 2**64 for s in streams], np.uint64)
    rest = np.array([(s[1], s[2]) for s in streams], np.int64) & _MASK32
    h = _mix32((seeds & _MASK32).astype(np.int64))
    for word in ((seeds >> np.uint64(32)).astype(np.int64), rest[:, 0], rest[:, 1]):
        h = _mix32(h ^ _mix32(word ^ 0x9E3779B9))
    return np.stack([h, _mix32(h ^ 0x85EBCA6B)], axis=1)


def gumbel_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """[rows, vocab] Gumbel(0, 1) noise: uniform(key, vocab index) from the hash, so a
    row's noise depends only on its keys, never on the other rows or on the device."""
    v = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    h = _mix32(_mix32(v[None, :] ^ keys[:, :1]) ^ keys[:, 1:])
    u = (h.double() + 0.5) / 2.0**32          # strictly inside (0, 1)
    return -torch.log(-torch.log(u))


def _to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # a plain copy: the step ends in one .tolist() that waits for the GPU anyway, so a
    # pinned, non-blocking copy would only add a staging buffer
    return torch.tensor(values, dtype=dtype, device=device)


def sample(logits: torch.Tensor, params: list[SamplingParams],
           streams: list[Stream | None]) -> list[int]:
    """One token per row, for the whole batch at once, with ONE device-to-host transfer.
    Greedy rows take the argmax (exactly, so outputs match HF's greedy generate); the
    others take argmax(filtered logits / temperature + Gumbel noise) (Gumbel-max: an
    exact draw from the softmax), top-k and top-p applied batched from one sort. The
    noise comes from each row's stream, so a seeded request samples the same tokens in
    any batch and on CPU or CUDA alike."""
    rows, vocab = logits.shape[0], logits.shape[-1]
    if rows == 0:
        return []
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    if all(p.greedy for p in params):
        return greedy.tolist()
    dev = logits.device
    floats, top_k = [], []
    for p in params:
        # top_p 1 is off: 2 keeps even the tail that float cumsum rounds up to 1
        floats.append((1.0 if p.greedy else p.temperature, p.top_p if p.top_p < 1.0 else 2.0,
                       0.0 if p.greedy else 1.0))
        top_k.append(p.top_k if 0 < p.top_k < vocab else vocab)
    f = _to_device(floats, torch.float32, dev)
    scaled = logits / f[:, :1]
    if any(not p.greedy and (p.top_p < 1.0 or 0 < p.top_k < vocab) for p in params):
        scaled = _filter(scaled, _to_device(top_k, torch.int64, dev), f[:, 1:2])
    # noise only for the rows that sample (a row's noise depends on its keys alone)
    sampled = [i for i, p in enumerate(params) if not p.greedy]
    idx = _to_device(sampled, torch.int64, dev)
    keys = torch.from_numpy(stream_keys_batch([streams[i] for i in sampled])).to(dev)
    noisy = scaled[idx].double() + gumbel_noise(keys, vocab)
    greedy[idx] = noisy.argmax(dim=-1)
    return greedy.tolist()


def _filter(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """-inf outside each row's top k, then outside the smallest prefix (by probability)
    whose mass reaches top_p (its first token always stays): one sort for the batch."""
    sorted_l, idx = torch.sort(scaled, dim=-1, descending=True)
    pos = torch.arange(scaled.shape[-1], device=scaled.device)[None, :]
    sorted_l = sorted_l.masked_fill(pos >= top_k[:, None], float("-inf"))
    probs = torch.softmax(sorted_l, dim=-1)
    drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
    sorted_l = sorted_l.masked_fill(drop, float("-inf"))
    return torch.full_like(scaled, float("-inf")).scatter_(1, idx, sorted_l)
