"""Paged KV memory: the block pool, per-sequence block tables, prefix caching."""

from .block_manager import BlockManager
from .block_pool import BlockPool, KVCacheBlock, NoFreeBlocksError
from .free_queue import FreeBlockQueue
from .hashing import hash_block_tokens, hash_prompt_blocks, root_hash
from .stats import BlockInfo, BlocksSnapshot, KVStats

__all__ = ["BlockManager", "BlockPool", "KVCacheBlock", "NoFreeBlocksError", "FreeBlockQueue",
           "hash_block_tokens", "hash_prompt_blocks", "root_hash", "BlockInfo",
           "BlocksSnapshot", "KVStats"]
