"""CUDA graphs of the decode step.

A decode step of a small model is a few hundred short kernels launched from Python; on a
GPU the launches, not the math, set its time. The step is captured once per (batch bucket,
block-table width bucket, selection policy and parameters) into a CUDA graph over static
input buffers and replayed: one graph launch per step. Rows past the real batch are
padding: cache slot -1 (nothing written), a one-token context in block 0, logits dropped.

A policy whose decisions are made on the GPU (dense, quest, adaptive, streaming) is
captured with the step, and so are its statistics and tier bookkeeping (device work whose
outputs are copied to the host after each replay, selection/recorder.py); one that works
on the host every step (h2o, oracle) makes the runner run eagerly. A capture that fails
(an operation that cannot be captured) marks its key eager and says so once."""

from __future__ import annotations

import contextlib
import sys

import torch

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _batch_bucket(n: int) -> int | None:
    return next((b for b in BATCH_BUCKETS if b >= n), None)


def _width_bucket(m: int) -> int:
    return max(16, 1 << (m - 1).bit_length())


class DecodeGraphs:
    """Captured decode steps of one ModelRunner (its model and KV cache)."""

    MAX_GRAPHS = 64  # then every graph is dropped and captures start over in a fresh pool

    def __init__(self, model, kv, device: torch.device, max_pages: int = 16):
        self.model, self.kv, self.device = model, kv, device
        # One table width for every context up to the model's longest: fewer captures (the
        # kernels bound their work by the context lengths, not by the table width). A
        # selector whose captured bookkeeping works over the whole width (statistics: a
        # dense pass over every page of the table) gets the width of the step's longest
        # table instead, in power-of-two buckets (`_width`).
        self.min_width = _width_bucket(max(1, max_pages))
        self.pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple, tuple] = {}
        self._failed: set[tuple] = set()

    def run(self, inputs, args, sel_key, selector, timer=None, span=None) -> torch.Tensor | None:
        """float32 logits [B, V] of one decode step from a replay, or None when this step
        must run eagerly (batch above the largest bucket, a capture that failed).
        `inputs`: the runner's DecodeInputs (persistent pinned staging); `args`: (seq_ids,
        block tables, token ids, positions). `sel_key`: the runner's selection key (the
        policy, its parameters and its bookkeeping are baked into a graph, so they are
        part of its key). `timer` (profiling, an OpTimer): the replay is timed as a whole,
        "total" (CUDA events around it; the kernels inside a graph cannot be timed one by
        one)."""
        seq_ids, tables = args[0], args[1]
        B = len(seq_ids)
        Bb = _batch_bucket(B)
        if Bb is None:
            return None
        key = (sel_key, Bb, self._width(selector, max(map(len, tables))))
        if key in self._failed:
            return None
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.MAX_GRAPHS:
                # A pool whose graphs are all gone must not be captured into again.
                self._graphs.clear()
                self.pool = torch.cuda.graph_pool_handle()
            entry = self._capture(key, selector)
            if entry is None:
                return None
        graph, rows, table, logits, recorded = entry
        # Two asynchronous copies from pinned staging; padding rows: token 0 at position 0
        # (a one-token context), cache slot -1 (nothing written), block 0.
        ints, tab = inputs.build(*args, padded=Bb, width=table.shape[1])
        if span is not None:
            span.start()   # the device work of the step begins with these copies
        rows.copy_(ints, non_blocking=True)
        table.copy_(tab, non_blocking=True)
        with timer("total") if timer is not None else contextlib.nullcontext():
            graph.replay()
        if recorded:
            selector.adopt(recorded)  # the replay refilled the captured bookkeeping outputs
        return logits[:B].to(torch.float32, copy=True)  # the static buffer is reused next step

    def capture_all(self, max_batch: int, sel_key, selector) -> int:
        """Capture every batch bucket up to `max_batch` at the default table width now (an
        engine does it at start-up, so no request waits for a capture); returns how many."""
        top = _batch_bucket(max_batch) or BATCH_BUCKETS[-1]
        n = 0
        for Bb in BATCH_BUCKETS:
            if Bb > top:
                break
            key = (sel_key, Bb, self._width(selector, 1))
            if key not in self._graphs and key not in self._failed:
                n += self._capture(key, selector) is not None
        return n

    def _width(self, selector, pages: int) -> int:
        """The table width of a step whose longest table has `pages` entries."""
        fit = getattr(selector, "width_bound", False)
        return _width_bucket(pages) if fit else max(self.min_width, _width_bucket(pages))

    def _capture(self, key: tuple, selector):
        from ..model.llama import PagedBatch
        _, Bb, Mb = key
        rows = torch.zeros(3, Bb, dtype=torch.int64, device=self.device)  # token ids, positions, slots
        rows[2].fill_(-1)
        table = torch.zeros(Bb, Mb, dtype=torch.int32, device=self.device)

        def step():
            ids, pos, slots = rows
            batch = PagedBatch(is_prefill=False, slot_mapping=slots, block_tables=table,
                               seq_lens=(pos + 1).to(torch.int32), seq_ids=list(range(Bb)), selector=selector)
            return self.model.forward_paged(ids, pos, batch, self.kv)

        take = getattr(selector, "take_pending", lambda: {})
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up: lazy initialisation happens outside the capture
                step()
            torch.cuda.current_stream(self.device).wait_stream(side)
            take()  # the warm-up's bookkeeping is nobody's step
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                logits = step()
            recorded = take()  # static outputs of the captured bookkeeping
        except RuntimeError as exc:
            take()
            self._failed.add(key)
            print(f"tinyserve: decode step (batch {Bb}, {Mb} pages) runs without a CUDA graph: {exc}",
                  file=sys.stderr)
            return None
        self._graphs[key] = (graph, rows, table, logits, recorded)
        return self._graphs[key]
