"""The physical paged KV cache: per-layer K, V and page key-bound tensors.

Layouts (kernels/reference.py is the spec):
  k_caches[l], v_caches[l]: [num_blocks, block_size, num_kv_heads, head_dim]
  metas[l]:                 [num_blocks, 2, num_kv_heads, head_dim] (key min, key max); of an FP8
                            cache, e4m3 codes under the page's K scale (exact, 1/16 of K/V)
  kv_scales[l] (FP8 only):  float32 [num_blocks, 2, num_kv_heads], the page K and V scales of a
                            float8_e4m3fn cache (kernels/fp8_reference.py); an FP8 cache keeps no
                            quantised key copy
  qkeys[l] (optional):      uint8 [num_blocks, block_size, num_kv_heads, head_dim * bits / 8],
                            the quantised key copy of the twostage selector (kernels/quant_reference.py),
                            allocated on first need and kept current by every cache write
  qbounds[l] (with qkeys):  uint8 [num_blocks, num_kv_heads, 2 * head_dim + 32], the int8 copy of the
                            page bounds that twostage's stage 1 reads (kernels/bound_copy_reference.py)
The BlockManager decides which block ids hold what; this class only owns the memory."""

from __future__ import annotations

import os

import torch

from .. import kernels
from ..errors import ConfigError

# The pool may take at most this share of the memory free when it is built: the
# weights, activations, CUDA graphs and the rest of the process need the remainder.
POOL_MEMORY_SHARE = 0.9
# Host memory of one block's bookkeeping in the BlockManager (a Python object and its
# free-list links: 137 bytes measured), paid on the host whatever the device.
HOST_BYTES_PER_BLOCK = 160


FP8 = torch.float8_e4m3fn


def cache_dtype(kv_cache_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """The storage dtype of the `kv_cache_dtype` setting ("auto": the model's)."""
    return model_dtype if kv_cache_dtype == "auto" else FP8


def block_bytes(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int,
                dtype: torch.dtype) -> int:
    """One block's bytes summed over all layers: K + V + key-bound metadata, and for an FP8
    cache the page scales."""
    elem = torch.empty((), dtype=dtype).element_size()
    kv = 2 * block_size * num_kv_heads * head_dim * elem
    side = 2 * num_kv_heads * head_dim * elem + (2 * num_kv_heads * 4 if dtype == FP8 else 0)
    return num_layers * (kv + side)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new allocations on `device`; None when it cannot be told."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory torch's allocator holds but no tensor uses (a previous engine's pool in
        # this process) is free for the new pool too
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:   # MemAvailable counts reclaimable page cache, unlike MemFree
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_pool_fits(config, num_blocks: int, block_size: int, dtype: torch.dtype,
                    device: torch.device) -> None:
    """Refuses a pool that cannot fit, before anything is allocated (2^24 blocks once
    tried for 137 GB and died after 20 s); the message gives the largest that fits."""
    device = torch.device(device)
    host = torch.device("cpu")
    per_block = {device: block_bytes(config.num_hidden_layers, block_size, config.num_key_value_heads,
                                     config.head_dim, dtype)}   # bytes of one block, per memory
    per_block[host] = per_block.get(host, 0) + HOST_BYTES_PER_BLOCK
    for dev, cost in per_block.items():
        free = available_bytes(dev)
        if free is None:
            continue
        room, need = int(free * POOL_MEMORY_SHARE), cost * num_blocks
        if need > room:
            raise ConfigError("num_blocks", (
                f"{num_blocks} blocks of {block_size} tokens need {need / 2**30:.2f} GiB of {dev.type} memory, "
                f"over the limit of {room / 2**30:.2f} GiB ({POOL_MEMORY_SHARE:.0%} of the "
                f"{free / 2**30:.2f} GiB available); at most {room // cost} blocks fit"))


class KVCache:
    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        for name, v in (("num_layers", num_layers), ("num_blocks", num_blocks),
                        ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(name, f"must be a positive integer, got {v!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or not (
                1 <= block_size <= 128 and block_size & (block_size - 1) == 0):
            raise ConfigError("block_size", f"must be a power of two in 1..128, got {block_size!r}")
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype   # the storage dtype: the model's, or float8_e4m3fn
        self.device = torch.device(device)
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        fp8 = dtype == FP8
        # Zero-filled so a page never read before being written holds no NaN garbage.
        self.k_caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.v_caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.metas: list[torch.Tensor] | None = [
            torch.zeros((num_blocks, 2, num_kv_heads, head_dim), dtype=dtype, device=self.device)
            for _ in range(num_layers)]
        # a page's first write (at offset 0) sets its scales afresh, whatever they held
        self.kv_scales: list[torch.Tensor] | None = [
            torch.zeros((num_blocks, 2, num_kv_heads), dtype=torch.float32, device=self.device)
            for _ in range(num_layers)] if fp8 else None
        self.qkeys: list[torch.Tensor] | None = None   # the copy cache writes keep current
        self.qkey_bits: int | None = None
        self._qkeys_by_bits: dict[int, list[torch.Tensor]] = {}
        self.qbounds: list[torch.Tensor] | None = None  # written with whichever key copy is current

    def ensure_quant_keys(self, bits: int, refresh: bool = False) -> list[torch.Tensor]:
        """The quantised key copy at `bits` (8 or 4), made the one cache writes keep
        current. Built from the cache when first asked for; `refresh` re-quantises every
        page in place (after writes that bypassed it: a restored snapshot, decode steps
        replayed from a CUDA graph captured before the copy existed). A copy is never
        freed while the cache lives, so a graph that writes it never writes freed memory."""
        if bits not in (8, 4):
            raise ConfigError("quant_bits", f"must be 8 or 4, got {bits!r}")
        if self.metas is None or self.dtype == FP8:
            raise ConfigError("kv_cache_dtype", "an FP8 KV cache keeps no quantised key copy")
        copy = self._qkeys_by_bits.get(bits)
        if copy is None:
            shape = (self.num_blocks, self.block_size, self.num_kv_heads, self.head_dim * bits // 8)
            # first asked for inside a decode step (inference mode): made a normal tensor like
            # the caches, so code outside inference mode may update it too
            with torch.inference_mode(False):
                copy = self._qkeys_by_bits[bits] = [torch.zeros(shape, dtype=torch.uint8, device=self.device)
                                                    for _ in range(self.num_layers)]
                if self.qbounds is None:
                    rows = (self.num_blocks, self.num_kv_heads,
                            kernels.bound_copy_reference.row_bytes(self.head_dim))
                    self.qbounds = [torch.zeros(rows, dtype=torch.uint8, device=self.device)
                                    for _ in range(self.num_layers)]
            refresh = True
        if refresh:
            # every slot of every page, against its page's current min/max: slots past a
            # page's content get codes too, but no reader looks past a context's length
            last = torch.arange(self.num_blocks, device=self.device) * self.block_size + self.block_size - 1
            for k, m, q, b in zip(self.k_caches, self.metas, copy, self.qbounds):
                kernels.quantize_keys(k, m, q, last, b)
        self.qkeys, self.qkey_bits = copy, bits
        return copy

    @classmethod
    def for_model(cls, config, num_blocks: int, block_size: int, dtype=torch.float32, device="cpu") -> "KVCache":
        return cls(config.num_hidden_layers, num_blocks, block_size, config.num_key_value_heads,
                   config.head_dim, dtype, device)

    @property
    def bytes_per_block(self) -> int:
        return block_bytes(self.num_layers, self.block_size, self.num_kv_heads, self.head_dim, self.dtype)

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_block * self.num_blocks

    def copy_blocks(self, pairs) -> None:
        """Copy whole blocks src -> dst (K, V and metadata or FP8 scales, every layer):
        copy-on-write."""
        if len(pairs) == 0:
            return
        mapping = torch.as_tensor(pairs, dtype=torch.int64).reshape(-1, 2)
        if int(mapping.min()) < 0 or int(mapping.max()) >= self.num_blocks:
            raise ValueError(f"copy_blocks: block id out of range 0..{self.num_blocks - 1}: {pairs}")
        mapping = mapping.to(self.device)
        kernels.copy_blocks(self.k_caches, self.v_caches, self.metas, mapping)
        # rare (copy-on-write); a scale row may be narrower than copy_blocks' 16-byte rows
        for copy in (*self._qkeys_by_bits.values(), self.qbounds or (), self.kv_scales or ()):
            for q in copy:
                q[mapping[:, 1]] = q[mapping[:, 0]]
