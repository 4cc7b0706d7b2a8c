"""A server's Prometheus metrics under our names: vLLM's `vllm:` and SGLang's
`sglang:` families mapped onto the StepMetrics names our engine reports, so the metric
plots read either. Parsed with prometheus_client's text parser; fetched with urllib
and a timeout, so a dead server costs one failed scrape, never a hang.

Gauges are summed over label sets (engines, ranks) except usage and hit-rate gauges,
which are averaged. Histograms (TTFT, inter-token latency) are summed over label sets
by bucket and turned into p50/p95/p99 over the interval since the previous scrape
(cumulative at the first), as Prometheus' histogram_quantile does: linear within the
bucket that holds the rank."""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ..observe.record import StepMetrics, StepRecord

# family name (as the parser gives it: counters without `_total`) -> our name
SCALARS: dict[str, str] = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage_perc",          # vLLM before 0.10
    "vllm:num_requests_running": "num_requests_running",
    "vllm:num_requests_waiting": "num_requests_waiting",
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:gpu_prefix_cache_queries": "prefix_cache_queries",
    "vllm:gpu_prefix_cache_hits": "prefix_cache_hits",
    "vllm:num_preemptions": "num_preemptions",
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:generation_tokens": "generation_tokens",
    "sglang:token_usage": "kv_cache_usage_perc",
    "sglang:num_running_reqs": "num_requests_running",
    "sglang:num_queue_reqs": "num_requests_waiting",
    "sglang:cache_hit_rate": "prefix_hit_rate",
    "sglang:gen_throughput": "gen_tokens_per_s",
    "sglang:num_retracted_reqs": "num_preemptions",
    "sglang:prompt_tokens": "prompt_tokens",
    "sglang:generation_tokens": "generation_tokens",
}
AVERAGED = {"kv_cache_usage_perc", "prefix_hit_rate"}
HISTOGRAMS: dict[str, str] = {
    "vllm:time_to_first_token_seconds": "ttft_s",
    "vllm:inter_token_latency_seconds": "itl_s",
    "vllm:time_per_output_token_seconds": "itl_s",                # older name, same meaning
    "vllm:e2e_request_latency_seconds": "e2e_s",
    "sglang:time_to_first_token_seconds": "ttft_s",
    "sglang:inter_token_latency_seconds": "itl_s",
    "sglang:time_per_output_token_seconds": "itl_s",
    "sglang:e2e_request_latency_seconds": "e2e_s",
}
QUANTILES = (0.5, 0.95, 0.99)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' rule on cumulative (upper bound, count) pairs sorted by bound;
    NaN when nothing was observed."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le                # the highest finite bound, as Prometheus does
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def parse_exposition(text: str) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]]]:
    """(scalars by our name, cumulative histogram buckets by our name) of one scrape.
    Raises ValueError on text the parser rejects."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    hists: dict[str, dict[float, float]] = {}
    for fam in text_string_to_metric_families(text):
        name = SCALARS.get(fam.name)
        if name is not None:
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                if math.isfinite(s.value):
                    sums[name] = sums.get(name, 0.0) + s.value
                    counts[name] = counts.get(name, 0) + 1
            continue
        hname = HISTOGRAMS.get(fam.name)
        if hname is not None and fam.type == "histogram":
            acc = hists.setdefault(hname, {})
            for s in fam.samples:
                if s.name.endswith("_bucket") and "le" in s.labels:
                    le = float(s.labels["le"])
                    acc[le] = acc.get(le, 0.0) + s.value
    scalars = {k: (v / counts[k] if k in AVERAGED else v) for k, v in sums.items()}
    if "prefix_hit_rate" not in scalars and scalars.get("prefix_cache_queries"):
        scalars["prefix_hit_rate"] = scalars.get("prefix_cache_hits", 0.0) / scalars["prefix_cache_queries"]
    return scalars, {k: sorted(v.items()) for k, v in hists.items()}


@dataclass
class Scrape:
    url: str
    t: float                                   # wall time of the scrape
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None                   # one line when the scrape failed

    def step_metrics(self) -> StepMetrics:
        """The values our metric plots know, as the engine's StepMetrics (0 for what
        this server does not report)."""
        v = self.values
        return StepMetrics(
            kv_cache_usage_perc=v.get("kv_cache_usage_perc", 0.0),
            num_requests_running=int(v.get("num_requests_running", 0)),
            num_requests_waiting=int(v.get("num_requests_waiting", 0)),
            num_preemptions=int(v.get("num_preemptions", 0)),
            prefix_cache_queries=int(v.get("prefix_cache_queries", 0)),
            prefix_cache_hits=int(v.get("prefix_cache_hits", 0)),
            gen_tokens_per_s=v.get("gen_tokens_per_s", 0.0),
            tokens_per_s=v.get("tokens_per_s", 0.0))

    def step_record(self, step: int, clock: float) -> StepRecord:
        """This scrape as an idle StepRecord at `clock`: what the serving views ingest
        from our engine (`SnapshotBuilder.ingest`), so the metric plots take a server's
        scrapes unchanged (hit rate from the cumulative query/hit counters, as ours)."""
        return StepRecord(step=step, t_start=clock, t_end=clock, phase="idle", seq_ids=(),
                          metrics=self.step_metrics())


_TOKEN_COUNTERS = ("prompt_tokens", "generation_tokens")


class MetricsScraper:
    """Scrapes one URL; keeps the previous histograms so quantiles cover the interval."""

    def __init__(self, url: str, timeout_s: float = 2.0, max_bytes: int = 32 << 20):
        self.url = url
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._prev: dict[str, list[tuple[float, float]]] = {}
        self._prev_counts: tuple[float, dict[str, float]] | None = None
        self.last: Scrape | None = None

    def fetch_text(self) -> str:
        with urllib.request.urlopen(self.url, timeout=self.timeout_s) as r:
            data = r.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise ValueError(f"over {self.max_bytes} bytes")
        return data.decode("utf-8", errors="replace")

    def _token_rates(self, scalars: dict[str, float], t: float) -> None:
        """tokens/s from the token counters' change since the previous scrape (a gauge
        the server reports, like SGLang's gen_throughput, is kept as it is)."""
        now = {k: scalars[k] for k in _TOKEN_COUNTERS if k in scalars}
        prev = self._prev_counts
        self._prev_counts = (t, now)
        if prev is None or t <= prev[0] or len(now) < 2 or len(prev[1]) < 2:
            return
        dt = t - prev[0]
        gen = (now["generation_tokens"] - prev[1]["generation_tokens"]) / dt
        total = gen + (now["prompt_tokens"] - prev[1]["prompt_tokens"]) / dt
        if gen >= 0 and total >= 0:              # a restarted server resets its counters
            scalars.setdefault("gen_tokens_per_s", gen)
            scalars["tokens_per_s"] = total

    def scrape(self) -> Scrape:
        t = time.time()
        try:
            text = self.fetch_text()
        except (urllib.error.URLError, OSError, ValueError) as e:
            self.last = Scrape(self.url, t, error=f"{type(e).__name__}: {e}")
            return self.last
        return self.ingest(text, t)

    def ingest(self, text: str, t: float) -> Scrape:
        try:
            scalars, hists = parse_exposition(text)
        except ValueError as e:
            self.last = Scrape(self.url, t, error=f"not Prometheus text: {e}")
            return self.last
        for name, buckets in hists.items():
            prev = dict(self._prev.get(name, []))
            delta = [(le, c - prev.get(le, 0.0)) for le, c in buckets]
            use = delta if delta and delta[-1][1] > 0 and prev else buckets
            for q in QUANTILES:
                scalars[f"{name}_p{round(q * 100)}"] = histogram_quantile(q, use)
        self._prev = hists
        self._token_rates(scalars, t)
        self.last = Scrape(self.url, t, scalars)
        return self.last
