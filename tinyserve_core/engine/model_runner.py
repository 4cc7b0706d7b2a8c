"""ModelRunner: turns scheduled sequences into one packed forward over the paged cache.

Prefill packs the uncached tokens of every item into one forward (varlen: the linear
layers see all tokens at once, attention runs per sequence over its pages); decode runs
one token per sequence in a single batched forward, replayed from a CUDA graph on a GPU
(engine/cuda_graphs.py). Both return a RunnerOutput: float32 logits, one row per item
(the last position), and, when profiling, the step's per-op timings and bytes moved.

Profiling never switches CUDA graphs off: a replayed step is timed whole ("total",
CUDA events around the replay) and now and then a graph step runs eagerly instead, to
sample the per-op breakdown, within `profile_budget` of the replayed steps' wall time
(engine/breakdown_sampler.py). Eager steps (CPU, prefill) are broken down every time."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import kernels
from ..kernels.cache_runs import page_runs
from ..kv.kv_cache import KVCache
from ..model.llama import LlamaForCausalLM, PagedBatch, selector_attend
from .config.sections import PROFILE_BUDGET, PROFILE_EVERY
from .breakdown_sampler import BreakdownSampler
from .step_inputs import DecodeInputs
from .step_timing import EventPool, for_device


# PROFILE_EVERY: graph-replayed decode steps per eager, per-op profiled one (the
# breakdown's sample rate); the config key `profile_every` sets it for an engine.


@dataclass
class RunnerOutput:
    """What one forward of the runner produced. While profiling, the step's timing
    events and selected-token counts are read by `finish()` (the engine calls it after
    sampling's sync), so profiling adds no sync of its own between the launch and the
    sampling: `timings` and `bytes_moved` are complete after `finish()`."""
    logits: torch.Tensor                                          # float32 [items, V]
    timings: dict[str, float] = field(default_factory=dict)       # op family -> s (profiling)
    bytes_moved: dict[str, int] = field(default_factory=dict)     # op family -> bytes (profiling)
    timer: "OpTimer | None" = None                                # events still to be read
    pending_bytes: "object | None" = None                         # () -> bytes_moved, read at finish
    account: "object | None" = None                               # (timings) -> None, told at finish

    def finish(self) -> "RunnerOutput":
        if self.timer is not None:
            self.timings.update(self.timer.result())
            self.timer = None
            if len(self.timings) > 1:   # a per-op breakdown: what the families leave of the total
                self.timings["other"] = max(0.0, self.timings["total"] - sum(
                    v for k, v in self.timings.items() if k not in ("total", "other")))
        if self.pending_bytes is not None:
            self.bytes_moved.update(self.pending_bytes())
            self.pending_bytes = None
        if self.account is not None:
            self.account(self.timings)
            self.account = None
        return self


@dataclass
class PrefillItem:
    seq_id: int
    token_ids: list[int]
    num_cached: int          # tokens whose KV is already in the pages (prefix-cache hit)
    block_table: list[int]


@dataclass
class DecodeItem:
    seq_id: int
    token_id: int
    position: int
    block_table: list[int]


class OpTimer:
    """Wall time per op family. CPU (`events` None): perf_counter around the op (CPU ops
    are synchronous). CUDA (`events`, an EventPool): event pairs resolved once per step,
    after the step's sync, and given back to the pool, so timing adds no sync inside the
    forward and creates no events once the pool holds a step's worth. Scopes may nest (a
    'total' around the families). `host_s`: the host time the timer itself took, on
    `clock` (what a replayed step's profiling costs; engine/breakdown_sampler.py)."""

    def __init__(self, events: EventPool | None = None, clock=time.perf_counter):
        self.pool, self.clock = events, clock
        self._record = events.recorder() if events is not None else None
        self.host_s = 0.0
        self.seconds: dict[str, float] = defaultdict(float)
        self.events: list[tuple[str, object, object]] = []
        self._pending: list[str] = []
        self._stack: list[tuple[str, object]] = []

    def __call__(self, name: str):
        self._pending.append(name)
        return self

    def __enter__(self):
        t = self.clock()
        name = self._pending.pop()
        if self._record is not None:
            start = self._record()
        else:
            start = time.perf_counter()
        self._stack.append((name, start))
        self.host_s += self.clock() - t
        return self

    def __exit__(self, *exc):
        t = self.clock()
        name, start = self._stack.pop()
        if self._record is not None:
            self.events.append((name, start, self._record()))
        else:
            self.seconds[name] += time.perf_counter() - start
        self.host_s += self.clock() - t
        return False

    def result(self) -> dict[str, float]:
        t = self.clock()
        if self.events:
            # called after the step's sampling sync, which came after every end event:
            # this wait returns at once
            self.events[-1][2].synchronize()
            for name, a, b in self.events:
                self.seconds[name] += a.elapsed_time(b) / 1000.0
                self.pool.give((a, b))
            self.events.clear()
        out = dict(self.seconds)
        self.host_s += self.clock() - t
        return out


class _SelectedPages:
    """Wraps the selector while profiling to count the tokens sparse layers attend. The
    count stays on the device until `tokens` is read (after the step's sync)."""

    def __init__(self, selector):
        self.selector, self.layers, self._tokens = selector, 0, []

    def select_attend(self, layer, query, kv, layer_idx, block_tables, seq_lens, seq_ids):
        pages, out = selector_attend(self.selector, layer, query, kv, layer_idx, block_tables, seq_lens, seq_ids)
        if pages is not None:
            self.layers += 1
            bs = kv.block_size
            valid = pages >= 0
            # the last page of a sequence may be partly filled
            lens = seq_lens.long()
            last = (lens - 1) // bs                                   # [B]
            fill = torch.where(pages == last[:, None, None], (lens - last * bs)[:, None, None], bs)
            self._tokens.append((fill * valid).sum() // pages.shape[1])  # per kv-head average
        return pages, out

    @property
    def tokens(self) -> int:
        return int(torch.stack(self._tokens).sum()) if self._tokens else 0


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, selector=None,
                 cuda_graphs: bool = True, profile: bool = False, profile_every: int = PROFILE_EVERY,
                 profile_budget: float = PROFILE_BUDGET, kv_cache_dtype: torch.dtype | None = None):
        """`kv_cache_dtype`: the cache's storage dtype (None: the model's; float8_e4m3fn: an
        FP8 cache with per-page scales; the policies it serves: registry.fp8_cache_conflict)."""
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.model.fuse_projections()   # one q/k/v and one gate/up product per layer
        self.config = model.config
        self.block_size = block_size
        self.kv = KVCache.for_model(self.config, num_blocks, block_size, kv_cache_dtype or dtype, self.device)
        self.selector = selector
        # Decode steps replay CUDA graphs on a GPU unless a selection that works on the
        # host every step rules them out.
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs = None
        self.profile = profile
        if not (isinstance(profile_every, int) and profile_every >= 1):
            raise ValueError(f"profile_every must be an integer >= 1, got {profile_every!r}")
        self.profile_every = profile_every
        # > 0: breakdown samples paid for from this share of the replayed time
        # (engine/breakdown_sampler.py); 0: the fixed cadence of profile_every
        self.profile_budget = profile_budget
        self._sampler = BreakdownSampler()
        self.events = for_device(self.device)   # timing events, shared with the engine's DeviceSpan
        # Persistent (pinned on a GPU) block-table rows and step staging (engine/step_inputs.py).
        from .cuda_graphs import _width_bucket
        self.max_pages = _width_bucket(-(-self.config.max_position_embeddings // block_size))
        self._inputs = DecodeInputs(block_size, self.max_pages, pin=self.device.type == "cuda", device=self.device)
        # Weight bytes of the matrix products: every forward reads each weight once.
        self._weight_bytes = sum(m.weight.numel() * m.weight.element_size()
                                 for m in self.model.modules() if isinstance(m, torch.nn.Linear))

    # ---- public API ------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, items: list[PrefillItem], span=None) -> RunnerOutput:
        """Compute tokens num_cached..len-1 of every item in one packed forward; its
        logits are float32 [len(items), V] at each item's last position."""
        if not items:
            return RunnerOutput(torch.empty(0, self.config.vocab_size))
        bs = self.block_size
        rows = self._inputs.tables_rows
        ids, starts, cached, lens, at = [], [0], [], [], []
        for it in items:
            L, nc = len(it.token_ids), it.num_cached
            if not 0 <= nc < L:
                raise ValueError(f"seq {it.seq_id}: num_cached={nc} must be in 0..{L - 1}")
            self._check_table(it.seq_id, it.block_table, L)
            at.append(rows.row(it.seq_id, it.block_table, rewrite=True))  # new after a preemption
            ids.extend(it.token_ids[nc:])
            starts.append(starts[-1] + L - nc)
            cached.append(nc)
            lens.append(L)
        # the batch's tables are the rows just written; positions and slots as arrays
        tables = rows.host[at, :max(len(it.block_table) for it in items)]
        pos = np.concatenate([np.arange(nc, L) for nc, L in zip(cached, lens)])
        item = np.repeat(np.arange(len(items)), np.diff(starts))
        slots = tables[item, pos // bs].astype(np.int64) * bs + pos % bs
        # each sequence fills its own pages in order: the write's runs, which only the CUDA
        # op reads (the torch reference finds the pages from the slots itself)
        runs = page_runs(slots, bs) if self.device.type == "cuda" else None
        if span is not None:
            span.start()   # the host's share ends here: the rest is device work
        dev = self.device
        batch = PagedBatch(
            is_prefill=True,
            slot_mapping=torch.from_numpy(slots).to(dev),
            block_tables=torch.from_numpy(tables).to(dev),
            seq_lens=torch.tensor(lens, dtype=torch.int32, device=dev),
            seq_ids=[it.seq_id for it in items],
            query_start=starts, num_cached=cached,
            logits_indices=torch.tensor([s - 1 for s in starts[1:]], device=dev),
            cache_runs=None if runs is None else torch.from_numpy(runs).to(dev))
        input_ids = torch.tensor(ids, dtype=torch.int64, device=dev)
        return self._run(input_ids, torch.from_numpy(pos).to(dev), batch, lens)

    def decode_columns(self, seq_ids: list[int], token_ids: list[int], positions: list[int],
                       tables: list[list[int]], span=None) -> RunnerOutput:
        """`decode` from columns (what the engine passes); `tables` may be the block
        manager's live lists: staging reads them and keeps nothing."""
        return self.decode(list(map(DecodeItem, seq_ids, token_ids, positions, tables)), span)

    @torch.inference_mode()
    def decode(self, items: list[DecodeItem], span=None) -> RunnerOutput:
        """One new token per sequence, all in one forward; float32 logits [B, V].
        `span` (engine/step_timing.DeviceSpan): started when the inputs are staged and
        the device work begins, so the staging counts as the host's."""
        if not items:
            return RunnerOutput(torch.empty(0, self.config.vocab_size))
        clock = self._sampler.clock
        t0 = clock()   # a profiled graph step's wall time is charged from here to its finish()
        if self.selector is not None and hasattr(self.selector, "prepare"):
            self.selector.prepare(self.kv)  # host side of selection (a key copy) before any replay
        sel_key = self._graph_key()
        sample = sel_key is not None and self._breakdown_due()
        if sel_key is not None and not sample:
            timer = OpTimer(self.events, clock) if self.profile else None
            logits = self._decode_graphs().run(items, sel_key, self.selector, timer, span, self._check_table)
            if logits is not None:
                self._end_selection_step(items)
                account = None if timer is None else (
                    lambda t: self._sampler.replayed(clock() - t0, timer.host_s, self.profile_budget))
                return RunnerOutput(logits, timer=timer, account=account)
        ints = self._inputs.stage(items, check=self._check_table)
        if span is not None:
            span.start()
        ints = self._to_device(ints)
        batch = PagedBatch(
            is_prefill=False, slot_mapping=ints[2],
            block_tables=self._inputs.table(ints[3], max(len(it.block_table) for it in items)),
            seq_lens=(ints[1] + 1).to(torch.int32), seq_ids=[it.seq_id for it in items], selector=self.selector)
        out = self._run(ints[0], ints[1], batch, [it.position + 1 for it in items])
        self._end_selection_step(items)
        if sample:
            out.account = lambda t: self._sampler.sampled(clock() - t0, self.profile_budget)
        return out

    def profile_account(self) -> dict[str, float]:
        """What profiling's graph steps were charged and earned so far (host seconds, on
        the sampler's clock) and how many breakdowns were sampled."""
        s = self._sampler
        return {"profile_spent_s": s.spent_s, "profile_earned_s": s.earned_s, "breakdowns": s.samples}

    def release(self, seq_id: int) -> None:
        """A sequence finished or was preempted: its block-table row is free again."""
        self._inputs.tables_rows.release(seq_id)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        self.kv.copy_blocks(pairs)

    def warm_up(self, max_batch: int) -> int:
        """Capture the decode graphs of every batch size up to `max_batch` (GPU, graphs on,
        a selection that allows them); returns how many were captured."""
        sel_key = self._graph_key()
        if sel_key is None:
            return 0
        with torch.inference_mode():
            return self._decode_graphs().capture_all(max_batch, sel_key, self.selector)

    # ---- internals -------------------------------------------------------------------
    def _decode_graphs(self):
        if self._graphs is None:
            from .cuda_graphs import DecodeGraphs
            self._graphs = DecodeGraphs(self.model, self.kv, self.device, self._inputs)
        return self._graphs

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A staging tensor on the device: an asynchronous copy from pinned memory on a
        GPU; a copy on the CPU too, since the staging buffer is reused next step."""
        return t.to(self.device, non_blocking=True) if self.device.type == "cuda" else t.clone()

    def _end_selection_step(self, items: list[DecodeItem]) -> None:
        if self.selector is not None and hasattr(self.selector, "end_step"):
            self.selector.end_step([it.seq_id for it in items])

    def _graph_key(self):
        """What a decode-step graph depends on besides shapes (the selection policy and
        its parameters), or None when this step must run eagerly: graphs off, the torch
        reference ops (they loop on the host per sequence), or a selection that works on
        the host every step."""
        if not self.cuda_graphs or kernels.backend_for(self.device) is kernels.reference:
            return None
        return "no selector" if self.selector is None else self.selector.graph_key()

    def _breakdown_due(self) -> bool:
        """While profiling, whether this graph-eligible decode step runs eagerly to take
        the per-op breakdown (engine/breakdown_sampler.py)."""
        return self.profile and self._sampler.due(self.profile_every, self.profile_budget)

    def _run(self, input_ids, positions, batch: PagedBatch, ctx: list[int]) -> RunnerOutput:
        """`ctx`: each item's context length after this step (host values, for the
        profiled byte counts)."""
        if not self.profile:
            return RunnerOutput(self.model.forward_paged(input_ids, positions, batch, self.kv).float())
        timer = OpTimer(self.events, self._sampler.clock)
        counter = _SelectedPages(batch.selector) if batch.selector is not None else None
        batch = dataclasses.replace(batch, timer=timer, selector=counter)
        with timer("total"):
            logits = self.model.forward_paged(input_ids, positions, batch, self.kv).float()
        new_tokens = int(input_ids.numel())
        # an eager step (prefill, CPU, no graph for it) is broken down every time: profiling
        # is charged its timer's host time (a sampled decode step replaces this account)
        return RunnerOutput(logits, timer=timer, pending_bytes=lambda: self._bytes_moved(
            batch.is_prefill, ctx, new_tokens, counter),
            account=lambda t: self._sampler.charged(timer.host_s, self.profile_budget))

    def _bytes_moved(self, is_prefill: bool, ctx: list[int], new_tokens: int,
                     counter: "_SelectedPages | None") -> dict[str, int]:
        """The fewest bytes each op family must move this step (each input read once,
        each output written once): the numerator of the bandwidth the GUI shows."""
        cfg, kv = self.config, self.kv
        layers = cfg.num_hidden_layers
        token_kv = 2 * cfg.num_key_value_heads * cfg.head_dim * kv.k_caches[0].element_size()
        if is_prefill:
            read_tokens = layers * sum(ctx)
        else:
            dense_layers = layers - (counter.layers if counter else 0)
            read_tokens = dense_layers * sum(ctx) + (counter.tokens if counter else 0)
        out = {"attention": read_tokens * token_kv,
               "cache_write": layers * new_tokens * token_kv,
               "matmul": self._weight_bytes}
        if counter is not None and counter.layers:
            pages = -(-torch.tensor(ctx) // self.block_size)
            out["selection"] = counter.layers * int(pages.sum()) * token_kv  # min + max per page
        return out

    def _check_table(self, seq_id, table: list[int], num_tokens: int) -> None:
        need = (num_tokens + self.block_size - 1) // self.block_size
        if len(table) < need:
            raise ValueError(f"seq {seq_id}: block table has {len(table)} blocks, "
                             f"{num_tokens} tokens need {need}")
