"""CUDA graphs of the decode step.

A decode step of a small model is a few hundred short kernels launched from Python; on a
GPU the launches, not the math, set its time. The step is captured once per (batch bucket,
selection policy and parameters, and with selection the block-table width bucket) into a CUDA graph over static input buffers and
replayed: one graph launch per step. Rows past the real batch are padding: cache slot -1
(nothing written), a one-token context, logits dropped.

A policy whose decisions are made on the GPU (dense, quest, adaptive, streaming) is
captured with the step, and so are its statistics and tier bookkeeping (device work whose
outputs are copied to the host after each replay, selection/recorder.py); one that works
on the host every step (h2o, oracle) makes the runner run eagerly. A capture that fails
(an operation that cannot be captured) marks its key eager and says so once."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings

import torch

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SELECTION_MIN_WIDTH = 512   # pages: a model of up to 8K tokens in 16-token pages keeps one width


def release_rng_after_failed_capture(device: torch.device) -> None:
    """A capture that raised leaves torch's default CUDA generator marked as capturing:
    torch.cuda.graph's exit calls capture_end, which raises on the invalidated capture
    before the generator's epilogue runs, and from then on every random draw on the
    device raises "Offset increment outside graph capture encountered unexpectedly"
    (found on an H200: a runner whose capture fell back to eager broke the next test's
    torch.randint). An empty capture runs the prologue and epilogue again, clearing it."""
    try:
        with torch.cuda.device(device), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "The CUDA Graph is empty"
            with torch.cuda.graph(torch.cuda.CUDAGraph()):
                pass
    except RuntimeError as exc:   # nothing more to do: say why random draws may fail
        print(f"tinyserve: after a failed capture the CUDA generator could not be reset: {exc}", file=sys.stderr)


def _batch_bucket(n: int) -> int | None:
    return next((b for b in BATCH_BUCKETS if b >= n), None)


def _width_bucket(m: int) -> int:
    return max(16, 1 << (m - 1).bit_length())


def _selection_width(m: int, max_pages: int) -> int:
    """The table width a step with selection is captured at: the least of 2^k and
    1.5 * 2^k (at least 16) that holds `m` pages, so the page axis that selection works
    over is at most 1.5x the batch's widest table (twice as many widths as powers of two)."""
    p = _width_bucket(m)
    w = p * 3 // 4 if p >= 32 and p * 3 // 4 >= m else p
    return min(max_pages, w)


class DecodeGraphs:
    """Captured decode steps of one ModelRunner (its model, KV cache and DecodeInputs).

    A graph's inputs are the host's pinned staging [4, Bb] (token ids, positions, cache
    slots, block-table rows), which the graph's first node copies to the device, and the
    device copy of the runner's block-table rows: the step's block table is gathered from
    those rows inside the graph, so a replay is one launch. Rows past the real batch are
    padding: cache slot -1 (nothing written), a one-token context, logits dropped."""

    MAX_GRAPHS = 64  # then every graph is dropped and captures start over in a fresh pool

    def __init__(self, model, kv, device: torch.device, inputs):
        self.model, self.kv, self.device, self.inputs = model, kv, device, inputs
        self.pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple, tuple] = {}
        self._failed: set[tuple] = set()
        self._generation = self._inputs_generation()

    def run(self, items, sel_key, selector, timer=None, span=None, check=None) -> torch.Tensor | None:
        """float32 logits [B, V] of one decode step of `items` (DecodeItems) from a
        replay, or None when this step must run eagerly (batch above the largest bucket,
        a capture that failed). `sel_key`: the runner's selection key (the policy, its
        parameters and its bookkeeping are baked into a graph, so they are part of its
        key). `timer` (profiling, an OpTimer): the replay is timed as a whole, "total"
        (CUDA events around it; the kernels inside a graph cannot be timed one by one).
        `check`: vets each block table (DecodeInputs.stage)."""
        B = len(items)
        Bb = _batch_bucket(B)
        if Bb is None:
            return None
        key = (sel_key, Bb, self._width(selector, max(len(it.block_table) for it in items)))
        if key in self._failed:
            return None
        self.inputs.stage(items, padded=Bb, check=check)
        if self._inputs_generation() != self._generation:
            self._drop_all()   # the block-table rows or the staging the graphs read were reallocated
            self._generation = self._inputs_generation()
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.MAX_GRAPHS:
                self._drop_all()
            entry = self._capture(key, selector)
            if entry is None:
                return None
        graph, logits, recorded = entry
        if span is not None:
            span.start()   # the device work of the step begins with the graph's staging copy
        with timer("total") if timer is not None else contextlib.nullcontext():
            graph.replay()
        if recorded:
            selector.adopt(recorded)  # the replay refilled the captured bookkeeping outputs
        return logits[:B].to(torch.float32, copy=True)  # the static buffer is reused next step

    def capture_all(self, max_batch: int, sel_key, selector) -> int:
        """Capture every batch bucket up to `max_batch` at the narrowest width this
        selector runs at (the only width without selection) now (an engine does it at
        start-up, so no request waits for a capture); returns how many."""
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
        """The table width a step whose widest table has `pages` pages is captured at.
        Attention bounds its work by the context lengths, so without selection one width
        (the widest) serves every context: one graph per batch bucket. Selection and its
        statistics size their page axis by the table width, so with a selector the width
        follows the batch, by half-octaves from SELECTION_MIN_WIDTH up (below it the
        axis costs too little to be worth more captures)."""
        max_pages = self.inputs.tables_rows.max_pages
        if selector is None:
            return max_pages
        fit = _selection_width(pages, max_pages)
        if getattr(selector, "width_bound", False):
            return fit   # statistics make a dense pass over every page of the table: fit it always
        return max(fit, min(max_pages, SELECTION_MIN_WIDTH))

    def _inputs_generation(self) -> tuple[int, int]:
        return self.inputs.tables_rows.generation, self.inputs.generation

    def _drop_all(self) -> None:
        # A pool whose graphs are all gone must not be captured into again.
        self._graphs.clear()
        self.pool = torch.cuda.graph_pool_handle()

    def _capture(self, key: tuple, selector):
        from ..model.llama import PagedBatch
        _, Bb, W = key
        # token ids, positions, slots, table rows: the host's pinned staging, copied by
        # the graph itself (one launch per step instead of a copy call and a launch); the
        # warm-up reads a padding batch instead (slot -1 writes nothing)
        rows = torch.zeros(4, Bb, dtype=torch.int64, device=self.device)
        rows[2].fill_(-1)
        inputs = self.inputs
        staged = inputs.staging(Bb)

        def step(copy: bool):
            if copy:
                rows.copy_(staged, non_blocking=True)
            ids, pos, slots, table_rows = rows
            batch = PagedBatch(is_prefill=False, slot_mapping=slots, block_tables=inputs.table(table_rows, W),
                               seq_lens=(pos + 1).to(torch.int32), seq_ids=list(range(Bb)), selector=selector)
            return self.model.forward_paged(ids, pos, batch, self.kv)

        take = getattr(selector, "take_pending", lambda: {})
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up: lazy initialisation happens outside the capture
                step(False)
            torch.cuda.current_stream(self.device).wait_stream(side)
            take()  # the warm-up's bookkeeping is nobody's step
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                logits = step(True)
            recorded = take()  # static outputs of the captured bookkeeping
        except RuntimeError as exc:
            release_rng_after_failed_capture(self.device)
            take()
            self._failed.add(key)
            print(f"tinyserve: decode step (batch {Bb}, {W} pages) runs without a CUDA graph: {exc}", file=sys.stderr)
            if os.environ.get("TINYSERVE_DEBUG_GRAPHS"):  # where in the step the capture broke
                traceback.print_exception(exc, file=sys.stderr)
            return None
        self._graphs[key] = (graph, logits, recorded)
        return self._graphs[key]
