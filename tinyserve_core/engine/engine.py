"""The engine: one synchronous `step()` at a time — schedule, copy-on-write copies, one
model forward (prefill or decode), sampling, bookkeeping — reported as a StepRecord.

Qt-free and single-threaded; the GUI drives it from a child process and changes live
settings through `update()` (thread-safe), applied at the next step boundary."""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from typing import Any

import torch

from ..errors import ConfigError
from ..kv.block_manager import BlockManager
from ..observe.events import Arrive, EventSink, Finish, Reject, Schedule
from ..observe.record import RequestTiming, StepMetrics, StepRecord
from .config import RESTART_KEYS, SELECTION_KEYS, EngineConfig
from .request import Request, Sequence, SeqStatus
from .sampling import SamplingParams, sample
from .scheduler import Scheduler


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA GPU is available")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


class Engine:
    def __init__(self, config: EngineConfig | None = None, model=None, tokenizer=None):
        from ..model.loader import default_model_dir, load_model
        from .model_runner import ModelRunner

        self.config = config = config or EngineConfig()
        config.validate()
        self.device = resolve_device(config.model.device)
        self.dtype = resolve_dtype(config.model.dtype, self.device)
        if model is None:
            model_dir = config.model.model or str(default_model_dir())
            model, tokenizer = load_model(model_dir, device=self.device, dtype=self.dtype)
        self.model = model
        self.tokenizer = tokenizer
        self.model_config = model.config
        self.max_model_len = config.model.max_model_len or int(
            getattr(self.model_config, "max_position_embeddings", 2048))
        self.eos_token_id = getattr(tokenizer, "eos_token_id", None) if tokenizer else None

        self.sink = EventSink(enabled=True)
        self.block_manager = BlockManager(config.cache.num_blocks, config.cache.block_size,
                                          enable_prefix_caching=config.cache.enable_prefix_caching,
                                          sink=self.sink)
        self.selector = self._build_selector(config)
        self.runner = ModelRunner(model, config.cache.num_blocks, config.cache.block_size,
                                  self.device, self.dtype, selector=self.selector)
        self.runner.warm_up(config.scheduler.max_num_seqs)  # CUDA graphs, captured before any request waits
        self.scheduler = Scheduler(self.block_manager, config.scheduler.max_num_seqs,
                                   config.scheduler.max_num_batched_tokens, self.sink,
                                   on_preempt=lambda seq: self._forget(seq.seq_id))

        self.clock = 0.0
        self.step_count = 0
        self.requests: dict[str, Request] = {}
        self.num_cow_copies = 0
        self._req_ids = itertools.count()
        self._pending_updates: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- selection -------------------------------------------------------------------
    def _build_selector(self, cfg: EngineConfig):
        from ..selection import build_selector
        return build_selector(sink=self.sink, **cfg.selection.selector_params())

    # -- requests --------------------------------------------------------------------
    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, arrival_s: float | None = None,
                    salt: str | None = None) -> str:
        params = params or SamplingParams()
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ConfigError("prompt", "a text prompt needs a tokenizer")
            token_ids = self.tokenizer.encode(prompt)
        else:
            token_ids = [int(t) for t in prompt]
        request_id = request_id if request_id is not None else f"req-{next(self._req_ids)}"
        if request_id in self.requests:
            raise ConfigError("request_id", f"{request_id!r} is already in use")
        arrival = self.clock if arrival_s is None else float(arrival_s)
        req = Request(request_id, token_ids, params, arrival, salt)
        self.sink.emit(Arrive(request_id, len(token_ids)))
        reason = self._never_fits(req)
        if reason is not None:
            req.finish_s = arrival
            self.sink.emit(Reject(request_id, reason))
            return request_id
        self.requests[request_id] = req
        gen = self._generator(params, 0, request_id)
        seq = Sequence(req, token_ids, gen, is_parent=True)
        req.seqs.append(seq)
        self.scheduler.add(seq)
        return request_id

    def _never_fits(self, req: Request) -> str | None:
        n_prompt = len(req.prompt_token_ids)
        if n_prompt == 0:
            return "empty prompt"
        if n_prompt >= self.max_model_len:
            return f"prompt of {n_prompt} tokens does not fit the context of {self.max_model_len}"
        total = min(n_prompt + req.params.max_tokens, self.max_model_len)
        need = -(-total // self.config.cache.block_size) * req.params.n
        if need > self.config.cache.num_blocks:
            return (f"needs {need} blocks for {total} tokens x {req.params.n} samples, "
                    f"the pool has {self.config.cache.num_blocks}")
        return None

    def _generator(self, params: SamplingParams, index: int, request_id: str):
        if params.greedy:
            return None
        g = torch.Generator(device=self.device)
        base = params.seed if params.seed is not None else (
            self.config.seed * 1_000_003 + hash_str(request_id))
        g.manual_seed((base * 65_537 + index) % (2**63 - 1))
        return g

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # -- live settings -----------------------------------------------------------------
    def update(self, **changes: Any) -> None:
        """Apply live settings at the next step boundary. Validated now (ConfigError
        names the field); settings that need a new pool are refused here."""
        bad = set(changes) & RESTART_KEYS
        if bad:
            raise ConfigError(sorted(bad)[0], "needs a new engine (restart), not a live update")
        new_cfg = EngineConfig.from_dict(changes, base=self.config)
        with self._lock:
            self._pending_updates.update(changes)
            self._pending_cfg = new_cfg

    def _apply_updates(self) -> None:
        with self._lock:
            if not self._pending_updates:
                return
            changes, self._pending_updates = self._pending_updates, {}
            self.config = self._pending_cfg
        cfg = self.config
        self.scheduler.max_num_seqs = cfg.scheduler.max_num_seqs
        self.scheduler.max_num_batched_tokens = cfg.scheduler.max_num_batched_tokens
        if SELECTION_KEYS & set(changes):
            self.selector.update(**cfg.selection.selector_params())

    # -- the step ------------------------------------------------------------------------
    def step(self) -> StepRecord:
        from .model_runner import DecodeItem, PrefillItem

        self._apply_updates()
        t_wall = time.perf_counter()
        t_start = self.clock
        sched = self.scheduler.schedule()
        seqs = sched.seqs
        finished: list[RequestTiming] = []
        n_prompt = n_gen = 0
        if seqs:
            self.sink.emit(Schedule("prefill" if sched.is_prefill else "decode",
                                    tuple(s.seq_id for s in seqs), sched.num_tokens))
            if sched.cow_pairs:
                self.runner.copy_blocks(sched.cow_pairs)
                self.num_cow_copies += len(sched.cow_pairs)
            if sched.is_prefill:
                items = [PrefillItem(s.seq_id, s.token_ids, s.num_computed_tokens,
                                     self.block_manager.block_table(s.seq_id)) for s in seqs]
                for s in seqs:
                    if s.request.first_scheduled_s is None:
                        s.request.first_scheduled_s = t_start
                logits = self.runner.prefill(items)
                n_prompt = sum(len(s) - s.num_computed_tokens for s in seqs)
            else:
                items = [DecodeItem(s.seq_id, s.token_ids[-1], len(s) - 1,
                                    self.block_manager.block_table(s.seq_id)) for s in seqs]
                logits = self.runner.decode(items)
            tokens = sample(logits, [s.request.params for s in seqs],
                            [s.generator for s in seqs])
            step_time = time.perf_counter() - t_wall
            self.clock += step_time
            n_gen = self._postprocess(seqs, logits, tokens, sched.is_prefill, finished)
        else:
            step_time = time.perf_counter() - t_wall
            self.clock += step_time
        self.step_count += 1
        metrics = self._metrics(step_time, n_prompt, n_gen)
        timings = dict(getattr(self.runner, "last_timings", {}) or {})
        selection = self.selector.take_summary()
        return StepRecord(
            step=self.step_count, t_start=t_start, t_end=self.clock,
            phase=("prefill" if sched.is_prefill else "decode") if seqs else "idle",
            seq_ids=tuple(s.seq_id for s in seqs), events=self.sink.drain(),
            metrics=metrics, finished=finished, op_timings_s=timings,
            op_bytes=dict(getattr(self.runner, "last_bytes", {}) or {}), selection=selection)

    def _postprocess(self, seqs, logits, tokens, is_prefill, finished) -> int:
        n_gen = 0
        now = self.clock
        for i, seq in enumerate(seqs):
            req = seq.request
            seq.num_computed_tokens = len(seq)
            new_seqs = [seq]
            if is_prefill and not seq.forked:
                new_seqs += self._fork_children(seq, logits[i:i + 1])
            seq.token_ids.append(tokens[i])
            for s in new_seqs:
                self.block_manager.cache_full_blocks(s.seq_id, s.token_ids, s.num_computed_tokens)
                n_gen += 1
                if req.first_token_s is None:
                    req.first_token_s = now
                reason = self._stop_reason(s)
                if reason is not None:
                    s.finish_s = now
                    self.scheduler.finish(s, reason)
                    self.sink.emit(Finish(req.request_id, s.seq_id, reason, s.num_output_tokens))
                    if req.finished:
                        req.finish_s = now
                        finished.extend(self._timings(req))
                        del self.requests[req.request_id]
                        for r in req.seqs:
                            self._forget(r.seq_id)
        return n_gen

    def _fork_children(self, parent: Sequence, logits_row: torch.Tensor) -> list[Sequence]:
        """n parallel samples: children share every prompt block of the parent."""
        req = parent.request
        parent.forked = True
        children = []
        for k in range(1, req.params.n):
            gen = self._generator(req.params, k, req.request_id)
            tok = sample(logits_row, [req.params], [gen])[0]
            child = Sequence(req, parent.token_ids + [tok], gen, is_parent=False)
            child.num_computed_tokens = parent.num_computed_tokens
            child.status = SeqStatus.RUNNING
            self.block_manager.fork(parent.seq_id, child.seq_id)
            req.seqs.append(child)
            self.scheduler.running.append(child)
            children.append(child)
        return children

    def _forget(self, seq_id: int) -> None:
        """Per-sequence selection state (h2o accumulators, tiers) ends with its blocks."""
        self.selector.forget(seq_id)

    def _stop_reason(self, seq: Sequence) -> str | None:
        p = seq.request.params
        last = seq.token_ids[-1]
        if not p.ignore_eos and self.eos_token_id is not None and last == self.eos_token_id:
            return "stop"
        if last in p.stop_token_ids:
            return "stop"
        if seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
            return "length"
        return None

    def _timings(self, req: Request) -> list[RequestTiming]:
        return [RequestTiming(
            request_id=req.request_id, seq_id=s.seq_id, arrival_s=req.arrival_s,
            first_scheduled_s=req.first_scheduled_s, first_token_s=req.first_token_s,
            finish_s=s.finish_s, prompt_len=len(req.prompt_token_ids),
            num_output_tokens=s.num_output_tokens, num_cached_tokens=req.num_cached_tokens,
            num_preemptions=s.num_preemptions, finish_reason=s.finish_reason,
            output_token_ids=tuple(s.output_token_ids)) for s in req.seqs]

    def _metrics(self, step_time: float, n_prompt: int, n_gen: int) -> StepMetrics:
        st = self.block_manager.stats()
        dt = max(step_time, 1e-9)
        return StepMetrics(
            kv_cache_usage_perc=st.usage_perc,
            num_requests_running=len(self.scheduler.running),
            num_requests_waiting=len(self.scheduler.waiting),
            num_preemptions=self.scheduler.num_preemptions,
            prefix_cache_queries=st.prefix_cache_queries,
            prefix_cache_hits=st.prefix_cache_hits,
            num_prompt_tokens=n_prompt, num_generation_tokens=n_gen,
            step_time_s=step_time,
            tokens_per_s=(n_prompt + n_gen) / dt if (n_prompt or n_gen) else 0.0,
            gen_tokens_per_s=n_gen / dt if n_gen else 0.0,
            memory_waste=st.waste, num_cow_copies=self.num_cow_copies,
            num_free_blocks=st.free, num_cached_free_blocks=st.cached_free,
            num_shared_blocks=st.shared)

    # -- views for observers ---------------------------------------------------------------
    def running_tables(self) -> dict[int, list[int]]:
        return {s.seq_id: list(self.block_manager.block_table(s.seq_id))
                for s in self.scheduler.running}


def hash_str(s: str) -> int:
    """A stable (not per-process randomised) hash for seeding."""
    return zlib.crc32(s.encode())
