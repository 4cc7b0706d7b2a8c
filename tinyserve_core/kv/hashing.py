"""Chained block hashes for automatic prefix caching (vLLM v1 semantics).

A full block's hash covers its own token ids and, through its parent's hash, every
token before it, so equal hashes mean equal prefixes. The optional salt enters only
through the root (the parent of block 0), which is enough to separate two tenants'
caches along the whole chain.

The digest is blake2b, not Python's `hash()`: the latter is randomized per process
(PYTHONHASHSEED) and 64-bit, while cache keys must be stable across runs and
collision-free in practice (a collision would silently serve another prompt's KV).
128 bits keep the chance of any collision among millions of blocks negligible."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence

from ..errors import ConfigError

HASH_BYTES = 16
_PERSON_ROOT = b"tinyserve-root"
_PERSON_BLOCK = b"tinyserve-block"


def root_hash(salt: str | bytes | None = None) -> int:
    """The parent hash of a sequence's first block; differs for every salt."""
    if salt is None:
        data = b"\x00"
    elif isinstance(salt, str):
        data = b"\x01" + salt.encode("utf-8")
    elif isinstance(salt, bytes):
        data = b"\x02" + salt
    else:
        raise ConfigError("salt", f"must be a string, bytes or None, got {type(salt).__name__}")
    digest = hashlib.blake2b(data, digest_size=HASH_BYTES, person=_PERSON_ROOT).digest()
    return int.from_bytes(digest, "little")


def hash_block_tokens(parent_hash: int, token_ids: Sequence[int]) -> int:
    """Hash of one full block given its parent's hash (or `root_hash(salt)` for block 0).

    Token ids are packed as fixed-width little-endian int64, so the encoding is
    unambiguous and identical on every machine."""
    h = hashlib.blake2b(parent_hash.to_bytes(HASH_BYTES, "little"),
                        digest_size=HASH_BYTES, person=_PERSON_BLOCK)
    h.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return int.from_bytes(h.digest(), "little")


def iter_block_hashes(token_ids: Sequence[int], block_size: int, root: int,
                      num_blocks: int | None = None) -> Iterator[int]:
    """Chained hashes of the leading full blocks, lazily (a prefix lookup stops at the
    first miss). `num_blocks` caps how many; default: every full block."""
    if num_blocks is None:
        num_blocks = len(token_ids) // block_size
    parent = root
    for start in range(0, num_blocks * block_size, block_size):
        parent = hash_block_tokens(parent, token_ids[start:start + block_size])
        yield parent


def hash_prompt_blocks(token_ids: Sequence[int], block_size: int,
                       salt: str | bytes | None = None) -> list[int]:
    """Chained hashes of every full block of `token_ids` (the partial tail has none)."""
    return list(iter_block_hashes(token_ids, block_size, root_hash(salt)))
