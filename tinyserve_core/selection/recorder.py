"""Selection bookkeeping off the critical path: statistics and tier accounting are
computed on the device while the step runs and read on the host one step late.

Per decode step: each layer's `record` queues tensor ops (selection/stats.py) whose
packed result waits in `pending`; `end_step` stacks the layers' real rows, starts ONE
non-blocking copy into pinned host memory and records a CUDA event; `collect` turns
finished copies into tier accounting and one summary per step that carries every
(sequence, layer, kv-head) record as columns (selection/detail.py): array slices,
no object per record. The engine
collects right after it launched the next step, so this host work overlaps the GPU
(on the CPU the copy is synchronous; the code path and the one-step lag are the same).

Inside a captured CUDA graph `record` runs once, at capture: its outputs are the
graph's static buffers, which the runner hands back after every replay (`adopt`)."""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from .base import SelectContext, Selection
from .detail import C, PLANES, SelectionDetail
from .stats import SelectionSummary, layer_stats, selection_only, step_summary


@dataclass
class _InFlight:
    index: int                      # issue order of the step (its SelectionSummary.step)
    policy: str
    layers: list[int]
    seq_ids: list[int]
    host: torch.Tensor              # pinned float32 [layers, B, H, C + 4M]
    page_bytes: dict[int, int]
    event: object                   # torch.cuda.Event, None on the CPU


class StatsRecorder:
    """`stats`: compute the full statistics (else only what the tiers need)."""

    def __init__(self, stats: bool, rtol: float = 1e-5, history: int = 4096):
        self.stats = stats
        self.rtol = rtol
        self.history: deque[SelectionSummary] = deque(maxlen=history)
        self.pending: dict[int, tuple] = {}          # layer -> (packed [B, H, W], policy, page bytes, seq_ids)
        self._inflight: deque[_InFlight] = deque()
        self._issued = 0
        self._fresh_from = 0     # steps issued from this index on came after the last collect
        self._forgets: list[tuple[int, int]] = []    # (seq_id, steps issued when it was forgotten)

    # ---- on the step (device work only) ----------------------------------------------
    def record(self, ctx: SelectContext, sel: Selection, policy: str) -> None:
        if ctx.layer_idx in self.pending:    # a new step began without end_step (direct callers)
            self.end_step()
        packed = layer_stats(ctx, sel, self.rtol) if self.stats else selection_only(ctx, sel)
        page_bytes = 2 * ctx.k_cache[0].numel() * ctx.k_cache.element_size()  # K + V of one block
        self.pending[ctx.layer_idx] = (packed, policy, page_bytes, list(ctx.seq_ids))

    def take_pending(self) -> dict[int, tuple]:
        """The layers recorded since the last end_step (a graph capture keeps them as
        its static outputs)."""
        out, self.pending = self.pending, {}
        return out

    def adopt(self, pending: dict[int, tuple]) -> None:
        """A graph replay refilled these captured outputs: they are this step's."""
        self.pending = dict(pending)

    def end_step(self, seq_ids: list[int] | None = None) -> None:
        """Start the asynchronous copy of this step's real rows (`seq_ids`: the batch;
        None = the ids the layers were recorded with)."""
        if not self.pending:
            return
        pend, self.pending = self.pending, {}
        layers = sorted(pend)
        first = pend[layers[0]]
        ids = list(first[3] if seq_ids is None else seq_ids)
        B = len(ids)
        dev = first[0].device
        stacked = torch.stack([pend[li][0][:B] for li in layers])
        if dev.type == "cuda":
            host = torch.empty(stacked.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(stacked, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = stacked, None
        self._inflight.append(_InFlight(self._issued, first[1], layers, ids, host,
                                        {li: pend[li][2] for li in layers}, event))
        self._issued += 1

    # ---- one step later (host work) ----------------------------------------------------
    def collect(self, tiers=None, keep_newest: bool = False) -> list[SelectionSummary]:
        """Summaries of the steps whose copies are done, oldest first; each step is
        delivered exactly once. `keep_newest`: leave in flight the step issued since the
        last call (the one the device is still working on; it comes at the next call)."""
        out = []
        while self._inflight and not (keep_newest and self._inflight[0].index >= self._fresh_from):
            f = self._inflight.popleft()
            if f.event is not None:
                f.event.synchronize()    # older than the step just launched: already done
            summary = self._process(f, tiers)
            if summary is not None:
                out.append(summary)
        self._fresh_from = self._issued
        self._apply_forgets(tiers)
        return out

    def flush(self, tiers=None) -> list[SelectionSummary]:
        self.end_step()
        return self.collect(tiers)

    def forget(self, seq_id: int, tiers) -> None:
        """Tier state of a finished sequence goes once its last steps were accounted."""
        self._forgets.append((seq_id, self._issued))
        self._apply_forgets(tiers)

    def _apply_forgets(self, tiers) -> None:
        done = self._inflight[0].index if self._inflight else self._issued
        keep = []
        for seq_id, issued in self._forgets:
            if issued <= done:
                if tiers is not None:
                    tiers.forget(seq_id)
            else:
                keep.append((seq_id, issued))
        self._forgets = keep

    def _process(self, f: _InFlight, tiers) -> SelectionSummary | None:
        packed = f.host.numpy()                                     # [L, B, H, C + 4M]
        accesses = None
        if tiers is not None:
            # tier residency is per (sequence, layer) state: one access each
            n_pages = packed[:, :, 0, 1].astype(np.int64).tolist()   # [L][B]
            M = (packed.shape[-1] - C) // PLANES
            union = packed[..., C:C + M].max(2) > 0.5                # [L, B, M] over the kv-heads
            accesses = [[tiers.access(int(seq_id), layer, n_pages[li][b], np.flatnonzero(union[li, b]),
                                      f.page_bytes[layer]) for b, seq_id in enumerate(f.seq_ids)]
                        for li, layer in enumerate(f.layers)]
        if not self.stats:
            return None
        detail = SelectionDetail.from_packed(f.policy, f.layers, f.seq_ids, packed, accesses)
        summary = step_summary(f.index, f.policy, f.layers, detail.per_head, accesses)
        self.history.append(summary)               # without the detail: a long history stays small
        return dataclasses.replace(summary, detail=detail)
