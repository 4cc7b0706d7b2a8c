"""The physical paged KV cache: per-layer K, V and page key-bound tensors.

Layouts (kernels/reference.py is the spec):
  k_caches[l], v_caches[l]: [num_blocks, block_size, num_kv_heads, head_dim]
  metas[l]:                 [num_blocks, 2, num_kv_heads, head_dim] (key min, key max)
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


def block_bytes(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int,
                dtype: torch.dtype) -> int:
    """K + V + key-bound metadata of one block, summed over all layers."""
    elem = torch.empty((), dtype=dtype).element_size()
    kv = 2 * block_size * num_kv_heads * head_dim
    meta = 2 * num_kv_heads * head_dim
    return num_layers * (kv + meta) * elem


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
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        # Zero-filled so a page never read before being written holds no NaN garbage.
        self.k_caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.v_caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.metas = [torch.zeros((num_blocks, 2, num_kv_heads, head_dim), dtype=dtype, device=self.device)
                      for _ in range(num_layers)]

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
        """Copy whole blocks src -> dst (K, V and metadata, every layer): copy-on-write."""
        if len(pairs) == 0:
            return
        mapping = torch.as_tensor(pairs, dtype=torch.int64).reshape(-1, 2)
        if int(mapping.min()) < 0 or int(mapping.max()) >= self.num_blocks:
            raise ValueError(f"copy_blocks: block id out of range 0..{self.num_blocks - 1}: {pairs}")
        kernels.copy_blocks(self.k_caches, self.v_caches, self.metas, mapping.to(self.device))
