"""The physical paged KV cache: per-layer K, V and page key-bound tensors.

Layouts (kernels/reference.py is the spec):
  k_caches[l], v_caches[l]: [num_blocks, block_size, num_kv_heads, head_dim]
  metas[l]:                 [num_blocks, 2, num_kv_heads, head_dim] (key min, key max)
The BlockManager decides which block ids hold what; this class only owns the memory."""

from __future__ import annotations

import torch

from .. import kernels
from ..errors import ConfigError


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
        """K + V + key-bound metadata of one block, summed over all layers."""
        elem = torch.empty((), dtype=self.dtype).element_size()
        kv = 2 * self.block_size * self.num_kv_heads * self.head_dim
        meta = 2 * self.num_kv_heads * self.head_dim
        return self.num_layers * (kv + meta) * elem

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
