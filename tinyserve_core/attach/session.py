"""One attach session: the subscriber, the cache model, the metrics scrapers and an
optional recorder behind one object, plus the summary the CLI writes.

Thread model: the thread that created the Attachment calls `poll()` (sockets, model,
recorder: single owner, no locks). Scrapes run on a daemon thread of their own (a
slow server must not stall the events) and only replace `latest` scrape objects,
which the poll thread reads. A GUI runs `poll()` in its worker thread and hands views
the immutable `model.block_map()` / `model.churn()` / `summary()` results."""

from __future__ import annotations

import math
import threading
from pathlib import Path

from .cache_model import CacheModel
from .metrics import AVERAGED, MetricsScraper, Scrape
from .recording import Recorder
from .subscriber import Endpoint, Stream, Subscriber

EVENT_KEYS = ("BlockStored", "BlockRemoved", "AllBlocksCleared", "other")


class MetricsPoller:
    """Scrapes each URL every `interval_s` on a daemon thread."""

    def __init__(self, urls: list[str], interval_s: float = 1.0, timeout_s: float = 2.0):
        self.scrapers = [MetricsScraper(u, timeout_s) for u in urls]
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.scrapers and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tinyserve-metrics", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for s in self.scrapers:
                s.scrape()
            self._stop.wait(self.interval_s)

    def latest(self) -> list[Scrape]:
        return [s.last for s in self.scrapers if s.last is not None]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def merged_metrics(scrapes: list[Scrape]) -> dict[str, float | None]:
    """The last values by name over every server: counts summed, rates, usage and
    latency quantiles averaged; NaN (nothing observed) as None."""
    acc: dict[str, list[float]] = {}
    for s in scrapes:
        if s.error is None:
            for k, v in s.values.items():
                acc.setdefault(k, []).append(v)
    out: dict[str, float | None] = {}
    for k, vs in sorted(acc.items()):
        mean = k in AVERAGED or k.rsplit("_p", 1)[-1].isdigit()
        v = sum(vs) / len(vs) if mean else sum(vs)
        out[k] = None if math.isnan(v) else v
    return out


def build_summary(endpoints: list[Endpoint], streams: list[Stream], model: CacheModel,
                  scrapes: list[Scrape]) -> dict:
    """The keys of issue 15's summary, exactly."""
    roots, depth = model.forest_counts()
    by_rank: dict[str, dict[str, int]] = {}
    live = model.live_by_rank()
    for st in streams:
        r = by_rank.setdefault(str(st.endpoint.rank), {"batches": 0, "blocks_live": 0})
        r["batches"] += st.stats.batches
    for rank, n in live.items():
        by_rank.setdefault(str(rank), {"batches": 0, "blocks_live": 0})["blocks_live"] = n
    return {
        "endpoints": [e.url for e in endpoints],
        "batches": sum(s.stats.batches for s in streams),
        "events": {k: model.events[k] for k in EVENT_KEYS},
        "malformed": sum(s.stats.malformed for s in streams),
        "gaps": sum(s.stats.gaps for s in streams),
        "replayed_batches": sum(s.stats.replayed_batches for s in streams),
        "blocks_live": model.blocks_live,
        "tree_roots": roots,
        "max_chain_depth": depth,
        "by_rank": dict(sorted(by_rank.items(), key=lambda kv: int(kv[0]))),
        "by_medium": model.live_by_medium(),
        "metrics": merged_metrics(scrapes),
    }


class Attachment:
    """Live attach: `poll()` until done, then `close()`; `summary()` at any time."""

    def __init__(self, endpoints: list[Endpoint], *, topic: str = "", bind: bool = False,
                 metrics_urls: list[str] | None = None, record: str | Path | None = None,
                 replay_timeout_s: float = 2.0, scrape_interval_s: float = 1.0,
                 model: CacheModel | None = None):
        self.endpoints = endpoints
        self.model = model or CacheModel()
        self.recorder = Recorder(record, endpoints, topic) if record else None
        try:
            self.subscriber = Subscriber(endpoints, self.model, topic=topic, bind=bind,
                                         replay_timeout_s=replay_timeout_s, on_frames=self.recorder)
        except BaseException:
            if self.recorder is not None:
                self.recorder.abort()
            raise
        self.metrics = MetricsPoller(list(metrics_urls or []), scrape_interval_s)
        self.metrics.start()

    @property
    def streams(self) -> list[Stream]:
        return self.subscriber.streams

    def poll(self, timeout_ms: int = 0) -> int:
        return self.subscriber.poll(timeout_ms)

    def summary(self) -> dict:
        return build_summary(self.endpoints, self.streams, self.model, self.metrics.latest())

    def close(self) -> Path | None:
        """Stop scraping, close the sockets, commit the recording (its path)."""
        self.metrics.stop()
        self.subscriber.close()
        return self.recorder.close() if self.recorder is not None else None

    def abort(self) -> None:
        self.metrics.stop()
        self.subscriber.close()
        if self.recorder is not None:
            self.recorder.abort()
