"""The engine: one synchronous `step()` at a time — schedule -> run -> postprocess ->
record (nano-vllm's shape). The scheduler owns the sequences and their blocks; the
runner returns a typed RunnerOutput; the step is reported as a StepRecord.

Single owner: an engine and everything it holds (scheduler, block manager, runner,
selector, policies, tiers) belong to the one thread that calls `step()`. Nothing in
them takes a lock. A host that changes settings (`update()`) or reads state for a
snapshot does it on that same loop, between steps — the GUI's engine host does
(app/serving/engine_host.py), whether it runs in a child process or a thread."""

from __future__ import annotations

import itertools
import time
import zlib
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ..kv.block_manager import BlockManager
from ..kv.kv_cache import cache_dtype, check_pool_fits
from ..observe.events import Arrive, EventSink, Reject, Schedule
from ..observe.record import RequestTiming, StepMetrics, StepRecord
from .config import RESTART_KEYS, SELECTION_KEYS, EngineConfig
from .config.checks import check_context
from .request import Request, Sequence
from .sampling import SamplingParams, sample
from .scheduler import ChildStart, PostprocessResult, ScheduleResult, Scheduler
from .step_timing import DeviceSpan

if TYPE_CHECKING:
    from .model_runner import RunnerOutput


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
        self.max_model_len = check_context(config.model.max_model_len, self.model_config.max_position_embeddings)
        self.eos_token_id = tokenizer.eos_token_id if tokenizer is not None else None
        self.kv_dtype = cache_dtype(config.cache.kv_cache_dtype, self.dtype)
        # before the block manager's and the runner's allocations, which would die slowly
        check_pool_fits(self.model_config, config.cache.num_blocks, config.cache.block_size,
                        self.kv_dtype, self.device)

        self.sink = EventSink(enabled=True)
        self.block_manager = BlockManager(config.cache.num_blocks, config.cache.block_size,
                                          enable_prefix_caching=config.cache.enable_prefix_caching,
                                          sink=self.sink)
        self.selector = self._build_selector(config)
        self.runner = ModelRunner(model, config.cache.num_blocks, config.cache.block_size,
                                  self.device, self.dtype, selector=self.selector,
                                  profile=config.output.profile,
                                  profile_every=config.output.profile_every,
                                  profile_budget=config.output.profile_budget,
                                  kv_cache_dtype=self.kv_dtype)
        self.runner.warm_up(config.scheduler.max_num_seqs)  # CUDA graphs, captured before any request waits
        self.scheduler = Scheduler(self.block_manager, config.scheduler.max_num_seqs,
                                   config.scheduler.max_num_batched_tokens, self.sink,
                                   max_model_len=self.max_model_len,
                                   eos_token_id=self.eos_token_id)

        self.clock = 0.0
        self.step_count = 0
        self.requests: dict[str, Request] = {}
        self.num_cow_copies = 0
        self._req_ids = itertools.count()
        self._pending_updates: dict[str, Any] = {}
        self._pending_cfg = config

    # -- selection -------------------------------------------------------------------
    def _build_selector(self, cfg: EngineConfig):
        from ..selection import build_selector
        return build_selector(**cfg.selection.selector_params())

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
        seq = Sequence(req, token_ids, self._seed(params, request_id), 0, is_parent=True)
        req.seqs.append(seq)
        self.scheduler.add(seq)
        return request_id

    def _never_fits(self, req: Request) -> str | None:
        return self.rejection_reason(req.prompt_token_ids, req.params)

    def rejection_reason(self, prompt_token_ids: list[int], params: SamplingParams) -> str | None:
        """Why a request could never run, or None. Reasons read `<kind>: <numbers>` with
        the kinds REJECT_EMPTY, REJECT_TOO_LONG and REJECT_POOL, so summaries count them
        by kind."""
        n_prompt = len(prompt_token_ids)
        if n_prompt == 0:
            return REJECT_EMPTY
        if n_prompt >= self.max_model_len:
            return (f"{REJECT_TOO_LONG}: {n_prompt} tokens, the context of {self.max_model_len} "
                    f"tokens leaves no room for an output token")
        total = min(n_prompt + params.max_tokens, self.max_model_len)
        cache = self.config.cache
        need = peak_blocks(n_prompt, total, params.n, cache.block_size)
        if need > cache.num_blocks:
            return (f"{REJECT_POOL}: needs {need} blocks at its peak for {params.n} sample(s) of "
                    f"{total} tokens, the pool has {cache.num_blocks}")
        return None

    def _seed(self, params: SamplingParams, request_id: str) -> int | None:
        """The request's sampling seed (None for greedy): its own, or one derived from the
        engine seed and the request id, so reruns of the same workload repeat."""
        if params.greedy:
            return None
        return params.seed if params.seed is not None else (
            self.config.seed * 1_000_003 + hash_str(request_id))

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # -- live settings -----------------------------------------------------------------
    def update(self, **changes: Any) -> None:
        """Apply live settings at the next step boundary. Validated now (ConfigError
        names the field); settings that need a new pool are refused here."""
        bad = set(changes) & RESTART_KEYS
        if bad:
            raise ConfigError(sorted(bad)[0], "needs a new engine (restart), not a live update")
        # On top of what is already pending (the config itself when nothing is): several
        # updates between two steps all apply.
        new_cfg = EngineConfig.from_dict(changes, base=self._pending_cfg)
        self._pending_updates.update(changes)
        self._pending_cfg = new_cfg

    def _apply_updates(self) -> None:
        if not self._pending_updates:
            return
        changes, self._pending_updates = self._pending_updates, {}
        self.config = cfg = self._pending_cfg
        self.scheduler.max_num_seqs = cfg.scheduler.max_num_seqs
        self.scheduler.max_num_batched_tokens = cfg.scheduler.max_num_batched_tokens
        self.runner.profile = cfg.output.profile
        self.runner.profile_every = cfg.output.profile_every
        self.runner.profile_budget = cfg.output.profile_budget
        if SELECTION_KEYS & set(changes):
            self.selector.update(**cfg.selection.selector_params())

    # -- the step ------------------------------------------------------------------------
    def step(self) -> StepRecord:
        """schedule -> run -> postprocess -> record. The selection bookkeeping of the
        previous decode step is read while this one runs on the device (between the
        launch and the sampling sync), so its host work hides behind the GPU's."""
        self._apply_updates()
        t_wall = time.perf_counter()
        t_start = self.clock
        batch = self.scheduler.schedule(now=t_start)
        for seq in batch.preempted:
            self._forget(seq.seq_id)
        span = DeviceSpan(self.runner.events)   # started by the runner once the inputs are staged
        out = self._run(batch, span)
        span.pause()                        # host work: counted as the host's on any device
        summaries = self.selector.collect(keep_newest=True)
        span.resume()
        tokens, children = self._sample(batch, out.logits)
        span.stop()
        out.finish()                        # graph timing events, read after sampling's sync
        step_time = time.perf_counter() - t_wall
        self.clock += step_time
        post = self.scheduler.postprocess(batch, tokens, children, now=self.clock)
        for req in post.finished:
            del self.requests[req.request_id]
            for seq in req.seqs:   # per-sequence selection state ends with its blocks
                self._forget(seq.seq_id)
        if not self.scheduler.has_work():   # nothing runs next: deliver the last step now
            summaries += self.selector.collect()
        rec = self._record(batch, out, post, t_start, step_time, summaries)
        rec.metrics.device_time_s = span.seconds()
        rec.metrics.host_time_s = max(0.0, time.perf_counter() - t_wall - rec.metrics.device_time_s)
        return rec

    def _forget(self, seq_id: int) -> None:
        self.selector.forget(seq_id)
        self.runner.release(seq_id)

    def _run(self, batch: ScheduleResult, span: DeviceSpan | None = None) -> RunnerOutput:
        """Copy-on-write copies, then one forward over the scheduled sequences."""
        from .model_runner import PrefillItem, RunnerOutput

        seqs = batch.seqs
        if not seqs:
            return RunnerOutput(torch.empty(0))
        self.sink.emit(Schedule("prefill" if batch.is_prefill else "decode",
                                tuple(s.seq_id for s in seqs), batch.num_tokens))
        if batch.cow_pairs:
            self.runner.copy_blocks(batch.cow_pairs)
            self.num_cow_copies += len(batch.cow_pairs)
        if batch.is_prefill:
            table = self.block_manager.block_table
            return self.runner.prefill([PrefillItem(s.seq_id, s.token_ids, s.num_computed_tokens,
                                                    table(s.seq_id)) for s in seqs], span)
        # columns, the live block tables (read while staging, not copied)
        ids = [s.seq_id for s in seqs]
        tokens = [s.token_ids[-1] for s in seqs]
        return self.runner.decode_columns(ids, tokens, [len(s.token_ids) - 1 for s in seqs],
                                          list(map(self.block_manager.live_table, ids)), span)

    def _sample(self, batch: ScheduleResult, logits: torch.Tensor
                ) -> tuple[list[int], dict[int, list[ChildStart]]]:
        """One token per scheduled sequence, and the first tokens of the siblings that a
        first prefill forks, all in ONE batched `sample` call (one host transfer): each
        sibling samples the parent's logits row with its own stream (request seed, its
        sample index, tokens sampled so far), so its tokens never depend on the batch."""
        seqs = batch.seqs
        if not seqs:
            return [], {}
        params = [s.request.params for s in seqs]
        streams = [None if s.seed is None else (s.seed, s.sample_index, s.num_output_tokens)
                   for s in seqs]
        rows = [logits]
        for i in batch.to_fork:
            p, parent = seqs[i].request.params, seqs[i]
            rows.append(logits[i:i + 1].expand(p.n - 1, -1))
            params += [p] * (p.n - 1)
            streams += [None if parent.seed is None else
                        (parent.seed, k, parent.num_output_tokens) for k in range(1, p.n)]
        drawn = sample(torch.cat(rows) if len(rows) > 1 else logits, params, streams)
        tokens, at = drawn[:len(seqs)], len(seqs)
        children: dict[int, list[ChildStart]] = {}
        for i in batch.to_fork:
            n = seqs[i].request.params.n
            children[i] = [ChildStart(t, k) for k, t in enumerate(drawn[at:at + n - 1], start=1)]
            at += n - 1
        return tokens, children

    def _record(self, batch: ScheduleResult, out: RunnerOutput, post: PostprocessResult,
                t_start: float, step_time: float, summaries: list) -> StepRecord:
        self.step_count += 1
        seqs = batch.seqs
        n_prompt = batch.num_tokens if batch.is_prefill else 0   # uncached prompt tokens
        metrics = self._metrics(step_time, n_prompt, post.num_generated)
        selection = tuple(summaries)
        return StepRecord(
            step=self.step_count, t_start=t_start, t_end=self.clock,
            phase=("prefill" if batch.is_prefill else "decode") if seqs else "idle",
            seq_ids=tuple(s.seq_id for s in seqs), events=self.sink.drain(), metrics=metrics,
            finished=[t for req in post.finished for t in self._timings(req)],
            op_timings_s=out.timings, op_bytes=out.bytes_moved, selection=selection)

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
        table = self.block_manager.block_table   # a copy each
        return {s.seq_id: table(s.seq_id) for s in self.scheduler.running}


REJECT_EMPTY = "empty prompt"
REJECT_TOO_LONG = "prompt too long"
REJECT_POOL = "pool too small"


def peak_blocks(prompt_len: int, total_len: int, n: int, block_size: int) -> int:
    """Blocks a request holds at its peak when each of its n samples runs to total_len
    tokens (prompt included). The last sampled token is never written to the cache, so
    a sample holds total_len - 1 slots. The samples fork after the prefill and share the
    prompt's blocks; the full ones stay shared, while the partial last one is copied by
    each sample that writes into it (so a one-token request writes none and shares all)."""
    slots = total_len - 1
    if slots <= prompt_len:
        return -(-prompt_len // block_size)
    shared = prompt_len // block_size
    return shared + n * (-(-slots // block_size) - shared)


def hash_str(s: str) -> int:
    """A stable (not per-process randomised) hash for seeding."""
    return zlib.crc32(s.encode())
