"""CUDA graphs of the decode step.

A decode step of a small model is a few hundred short kernels launched from Python; on a
GPU the launches, not the math, set its time. The step is captured once per (batch bucket,
block-table width bucket, selection policy and parameters) into a CUDA graph over static
input buffers and replayed: one graph launch per step. Rows past the real batch are
padding: cache slot -1 (nothing written), a one-token context in block 0, logits dropped.

A policy whose decisions are made on the GPU (dense, quest, adaptive, streaming) is
captured with the step; one that works on the host every step (h2o, oracle, or any policy
with statistics or a two-tier cache) makes the runner run eagerly. A capture that fails
(an operation that cannot be captured) marks its key eager and says so once."""

from __future__ import annotations

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
        # kernels bound their work by the context lengths, not by the table width).
        self.min_width = _width_bucket(max(1, max_pages))
        self.pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple, tuple] = {}
        self._failed: set[tuple] = set()

    def run(self, ids, positions, slots, tables, selector) -> torch.Tensor | None:
        """float32 logits [B, V] of one decode step from a replay, or None when this step
        must run eagerly (batch above the largest bucket, a capture that failed)."""
        from ..model.llama import PagedBatch
        B = len(ids)
        Bb = _batch_bucket(B)
        if Bb is None:
            return None
        Mb = max(self.min_width, _width_bucket(max(len(t) for t in tables)))
        # The policy and its parameters are baked into a graph: they are part of its key.
        key = ("no selector" if selector is None else selector.graph_key(), Bb, Mb)
        if key in self._failed:
            return None
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.MAX_GRAPHS:
                # A pool whose graphs are all gone must not be captured into again.
                self._graphs.clear()
                self.pool = torch.cuda.graph_pool_handle()
            entry = self._capture(key, selector, PagedBatch)
            if entry is None:
                return None
        graph, st, logits = entry
        st["ids"].copy_(_padded([ids], (1, Bb), 0, torch.int64)[0])
        st["pos"].copy_(_padded([positions], (1, Bb), 0, torch.int64)[0])
        st["slots"].copy_(_padded([slots], (1, Bb), -1, torch.int64)[0])
        st["lens"].copy_(_padded([[p + 1 for p in positions]], (1, Bb), 1, torch.int32)[0])
        st["tables"].copy_(_padded(tables, (Bb, Mb), 0, torch.int32))
        graph.replay()
        return logits[:B].to(torch.float32, copy=True)  # the static buffer is reused next step

    def capture_all(self, max_batch: int, selector) -> int:
        """Capture every batch bucket up to `max_batch` at the default table width now (an
        engine does it at start-up, so no request waits for a capture); returns how many."""
        from ..model.llama import PagedBatch
        sel_key = "no selector" if selector is None else selector.graph_key()
        top = _batch_bucket(max_batch) or BATCH_BUCKETS[-1]
        n = 0
        for Bb in BATCH_BUCKETS:
            if Bb > top:
                break
            key = (sel_key, Bb, self.min_width)
            if key not in self._graphs and key not in self._failed:
                n += self._capture(key, selector, PagedBatch) is not None
        return n

    def _capture(self, key: tuple, selector, PagedBatch):
        _, Bb, Mb = key
        dev = self.device
        st = {"ids": torch.zeros(Bb, dtype=torch.int64, device=dev),
              "pos": torch.zeros(Bb, dtype=torch.int64, device=dev),
              "slots": torch.full((Bb,), -1, dtype=torch.int64, device=dev),
              "lens": torch.ones(Bb, dtype=torch.int32, device=dev),
              "tables": torch.zeros(Bb, Mb, dtype=torch.int32, device=dev)}

        def step():
            batch = PagedBatch(is_prefill=False, slot_mapping=st["slots"], block_tables=st["tables"],
                               seq_lens=st["lens"], seq_ids=list(range(Bb)), selector=selector)
            return self.model.forward_paged(st["ids"], st["pos"], batch, self.kv)

        try:
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):  # warm-up: lazy initialisation happens outside the capture
                step()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                logits = step()
        except RuntimeError as exc:
            self._failed.add(key)
            print(f"tinyserve: decode step (batch {Bb}, {Mb} pages) runs without a CUDA graph: {exc}",
                  file=sys.stderr)
            return None
        self._graphs[key] = (graph, st, logits)
        return self._graphs[key]


def _padded(rows, shape, fill, dtype) -> torch.Tensor:
    """Host tensor of `shape` holding the ragged `rows` at its top left, `fill` elsewhere."""
    out = torch.full(shape, fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=dtype)
    return out
