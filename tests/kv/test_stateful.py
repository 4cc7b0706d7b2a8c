"""Random allocate / append / fork / free / prefix-reuse sequences against a simulated
KV cache. Besides check_invariants after every rule, each block slot holds the token
id "computed" into it, so the test also proves the memory contents are right: a prefix
hit serves exactly the prompt's tokens, a CoW copy preserves the shared tokens, and
the event log alone replays to the same refcounts."""

import numpy as np
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tinyserve_core.kv import BlockManager, NoFreeBlocksError
from tinyserve_core.observe.events import EventSink

# few distinct prefixes over a tiny vocabulary: hits, shared blocks and equal hashes
# from different sequences all happen often
PREFIXES = [[1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1], [3, 3, 2, 2, 1, 1, 0, 0] * 2]


class KVMachine(RuleBasedStateMachine):
    @initialize(num_blocks=st.integers(4, 24), log_bs=st.integers(0, 3),
                caching=st.booleans())
    def setup(self, num_blocks, log_bs, caching):
        self.bs = 1 << log_bs
        self.sink = EventSink()
        self.bm = BlockManager(num_blocks, self.bs, enable_prefix_caching=caching,
                               sink=self.sink)
        self.kv = np.full((num_blocks, self.bs), -1, np.int64)
        self.tokens: dict[int, list[int]] = {}
        self.next_id = 0
        self.replayed = np.zeros(num_blocks, np.int64)

    def _slot(self, seq_id, pos):
        table = self.bm.block_table(seq_id)
        return table[pos // self.bs], pos % self.bs

    def _write(self, seq_id, start):
        toks = self.tokens[seq_id]
        for pos in range(start, len(toks)):
            self.kv[self._slot(seq_id, pos)] = toks[pos]
        self.bm.cache_full_blocks(seq_id, toks, len(toks))

    @rule(prefix=st.sampled_from(PREFIXES), cut=st.integers(0, 16),
          suffix=st.lists(st.integers(0, 3), max_size=6), salt=st.sampled_from([None, "s"]))
    def allocate(self, prefix, cut, suffix, salt):
        toks = prefix[:cut] + suffix
        if not toks:
            return
        seq_id, self.next_id = self.next_id, self.next_id + 1
        if not self.bm.can_allocate(toks, salt):
            before = self.bm.stats()
            try:
                self.bm.allocate(seq_id, toks, salt)
            except NoFreeBlocksError:
                pass
            else:
                raise AssertionError("allocate succeeded although can_allocate said no")
            assert self.bm.stats() == before and not self.bm.has_seq(seq_id)
            return
        expect_cached = self.bm.cached_prefix_len(toks, salt)
        cached = self.bm.allocate(seq_id, toks, salt)
        assert cached == expect_cached and cached % self.bs == 0 and cached <= len(toks) - 1
        self.tokens[seq_id] = list(toks)
        for pos in range(cached):  # a hit must serve exactly this prompt's tokens
            assert self.kv[self._slot(seq_id, pos)] == toks[pos]
        self._write(seq_id, cached)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), new=st.lists(st.integers(0, 3), min_size=1, max_size=3))
    def append(self, data, new):
        seq_id = data.draw(st.sampled_from(sorted(self.tokens)))
        old_table = self.bm.block_table(seq_id)
        n = len(self.tokens[seq_id])
        if len(new) == 1 and not self.bm.can_append(seq_id):
            try:
                self.bm.append_slot(seq_id, n + 1)
            except NoFreeBlocksError:
                return
            raise AssertionError("append_slot succeeded although can_append said no")
        try:
            pairs = self.bm.append_slot(seq_id, n + len(new))
        except NoFreeBlocksError:
            assert self.bm.block_table(seq_id) == old_table
            return
        table = self.bm.block_table(seq_id)
        for src, dst in pairs:
            i = old_table.index(src)
            assert table[i] == dst and i == len(old_table) - 1
            self.kv[dst] = self.kv[src]
        assert table[:len(old_table) - 1] == old_table[:-1]
        self.tokens[seq_id].extend(new)
        self._write(seq_id, n)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(sorted(self.tokens)))
        child, self.next_id = self.next_id, self.next_id + 1
        self.bm.fork(parent, child)
        self.tokens[child] = list(self.tokens[parent])
        assert self.bm.block_table(child) == self.bm.block_table(parent)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def free(self, data):
        seq_id = data.draw(st.sampled_from(sorted(self.tokens)))
        self.bm.free(seq_id)
        del self.tokens[seq_id]

    @invariant()
    def consistent(self):
        if not hasattr(self, "bm"):
            return
        self.bm.check_invariants()
        for seq_id, toks in self.tokens.items():
            got = [int(self.kv[self._slot(seq_id, p)]) for p in range(len(toks))]
            assert got == toks, f"seq {seq_id} reads {got}, wrote {toks}"
        for block in self.bm.pool.cached_blocks.values():
            assert tuple(self.kv[block.block_id].tolist()) == block.token_ids
        self._replay_events()

    def _replay_events(self):
        ref = self.replayed
        for e in self.sink.drain():
            if e.kind == "alloc":
                assert (ref[list(e.block_ids)] == 0).all()
                ref[list(e.block_ids)] = 1
            elif e.kind in ("prefix_hit", "fork"):
                ref[list(e.block_ids)] += 1
            elif e.kind == "cow_copy":
                ref[e.src] -= 1
            elif e.kind == "free":
                ref[list(e.block_ids)] -= 1
                assert (ref[list(e.released)] == 0).all()
            elif e.kind == "evict":
                assert ref[e.block_id] == 0
        assert np.array_equal(ref, self.bm.blocks_snapshot().ref_cnt)


KVMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
TestKVStateMachine = KVMachine.TestCase
