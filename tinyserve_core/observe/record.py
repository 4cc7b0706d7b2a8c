"""What one engine step reports: its events, its metrics and the requests it finished.

Times are on the engine clock (seconds): in `simulate` the clock advances by each
step's measured compute time and jumps over idle gaps to the next arrival, so TTFT
and TPOT are real compute latencies without wall-clock idling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import Event


@dataclass(slots=True)
class RequestTiming:
    request_id: str
    seq_id: int
    arrival_s: float
    first_scheduled_s: float | None
    first_token_s: float | None
    finish_s: float | None
    prompt_len: int
    num_output_tokens: int
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    finish_reason: str | None = None
    output_token_ids: tuple[int, ...] = ()

    @property
    def ttft_s(self) -> float | None:
        if self.first_token_s is None:
            return None
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (vLLM's TPOT)."""
        if self.finish_s is None or self.first_token_s is None or self.num_output_tokens < 2:
            return None
        return (self.finish_s - self.first_token_s) / (self.num_output_tokens - 1)


@dataclass(slots=True)
class StepMetrics:
    # vLLM names where they overlap
    kv_cache_usage_perc: float = 0.0          # used blocks / total blocks, 0..1
    num_requests_running: int = 0
    num_requests_waiting: int = 0
    num_preemptions: int = 0                  # cumulative
    prefix_cache_queries: int = 0             # cumulative, tokens
    prefix_cache_hits: int = 0                # cumulative, tokens
    # ours
    num_prompt_tokens: int = 0                # computed this step
    num_generation_tokens: int = 0            # sampled this step
    step_time_s: float = 0.0
    tokens_per_s: float = 0.0                 # (prompt + generated) / step time
    gen_tokens_per_s: float = 0.0
    memory_waste: float = 0.0                 # empty allocated slots / allocated slots
    num_cow_copies: int = 0                   # cumulative
    num_free_blocks: int = 0
    num_cached_free_blocks: int = 0           # evictable
    num_shared_blocks: int = 0                # ref_cnt > 1
    device_time_s: float = 0.0                # span of the step's device work (engine/step_timing.py)
    host_time_s: float = 0.0                  # the step's whole wall time minus device_time_s


@dataclass(slots=True)
class StepRecord:
    step: int
    t_start: float
    t_end: float
    phase: str                                # "prefill" | "decode" | "idle"
    seq_ids: tuple[int, ...]
    events: list[Event] = field(default_factory=list)
    metrics: StepMetrics = field(default_factory=StepMetrics)
    finished: list[RequestTiming] = field(default_factory=list)
    op_timings_s: dict[str, float] = field(default_factory=dict)  # kernel family -> seconds
    op_bytes: dict[str, int] = field(default_factory=dict)        # kernel family -> bytes moved
    # selection.stats.SelectionSummary of the decode steps whose statistics arrived with
    # this step (read one step late: usually the previous decode step's; `.step` says);
    # each carries its step's (sequence, layer, kv-head) records as columns, `.detail`
    selection: tuple[Any, ...] = ()
