import os
import subprocess
import sys

import pytest

from tinyserve_core.errors import ConfigError
from tinyserve_core.kv import FreeBlockQueue, KVCacheBlock, hash_block_tokens, hash_prompt_blocks, root_hash


def ids(q):
    return [b.block_id for b in q]


def test_queue_order_popleft_append_and_remove_from_middle():
    blocks = [KVCacheBlock(i) for i in range(5)]
    q = FreeBlockQueue(blocks)
    assert ids(q) == [0, 1, 2, 3, 4] and len(q) == 5
    q.remove(blocks[2])
    assert ids(q) == [0, 1, 3, 4] and len(q) == 4 and not q.contains(blocks[2])
    assert q.popleft() is blocks[0]
    q.append(blocks[2])
    q.appendleft(blocks[0])
    assert ids(q) == [0, 1, 3, 4, 2]
    q.remove(blocks[2])  # the tail
    q.remove(blocks[0])  # the head
    assert ids(q) == [1, 3, 4] and q.peekleft() is blocks[1]
    for _ in range(3):
        q.popleft()
    assert len(q) == 0 and q.peekleft() is None
    with pytest.raises(IndexError):
        q.popleft()


def test_queue_rejects_double_insert_and_removing_an_absent_block():
    blocks = [KVCacheBlock(i) for i in range(2)]
    q = FreeBlockQueue(blocks)
    with pytest.raises(ValueError, match="already"):
        q.append(blocks[1])
    q.remove(blocks[1])
    with pytest.raises(ValueError, match="not in the free queue"):
        q.remove(blocks[1])
    assert ids(q) == [0]


def test_block_hash_covers_parent_tokens_and_salt():
    r = root_hash()
    h = hash_block_tokens(r, [1, 2, 3, 4])
    assert h == hash_block_tokens(r, (1, 2, 3, 4))
    assert h != hash_block_tokens(r, [1, 2, 3, 5])
    assert h != hash_block_tokens(r, [4, 3, 2, 1])
    # same tokens under another parent: a different position in another prefix
    assert hash_block_tokens(h, [1, 2, 3, 4]) != h
    assert root_hash("a") != root_hash("b") != r
    assert root_hash("a") != root_hash(b"a")  # str and bytes salts are not conflated
    # token ids are fixed width: [1, 256] and [256, 1] and large ids do not collide
    assert hash_block_tokens(r, [1, 256]) != hash_block_tokens(r, [256, 1])
    assert hash_block_tokens(r, [2**40]) != hash_block_tokens(r, [0])


def test_prompt_hashes_are_chained_over_full_blocks_only():
    toks = list(range(10))
    hs = hash_prompt_blocks(toks, 4)
    assert len(hs) == 2
    assert hs[1] == hash_block_tokens(hash_block_tokens(root_hash(), toks[:4]), toks[4:8])
    assert hash_prompt_blocks(toks, 4, salt="s") != hs


def test_bad_salt_type_names_the_field():
    with pytest.raises(ConfigError, match="salt"):
        root_hash(3)


def test_hashes_are_stable_across_processes():
    code = ("from tinyserve_core.kv import hash_prompt_blocks;"
            "print(hash_prompt_blocks(list(range(32)), 16, salt='x'))")
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                capture_output=True, text=True).stdout)
    assert len(outs) == 1
    assert outs.pop().strip() == str(hash_prompt_blocks(list(range(32)), 16, salt="x"))
