"""A synthetic vLLM-like server for the attach benchmark and the README screenshot:
per data-parallel rank, requests of a few shared system prompts (some long-running
conversations that grow turn by turn) are cached as chained blocks, and when a rank's
cache is full its least recently stored leaves are evicted, all published through our
KVEventPublisher (vLLM's wire format, rank r on port + r).

    python -m app.bench.attach_feed --url 'tcp://*:5611' --replay 'tcp://*:5621' --ranks 2 --seconds 60

Qt-free: the benchmark runs it in a thread, a shell runs it as a process."""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict

import numpy as np

from tinyserve_core.attach.subscriber import offset_port
from tinyserve_core.observe.kv_event_publisher import KVEventPublisher
from tinyserve_core.observe.kv_event_wire import MEDIUM_GPU, BlockRemoved, BlockStored


class RankCache:
    """One rank's prefix cache: which hashes are live, their parents, LRU order."""

    def __init__(self, rank: int, capacity: int, block_size: int, seed: int = 0, groups: int = 6):
        self.rank = rank
        self.capacity = capacity
        self.block_size = block_size
        self.rng = np.random.default_rng(seed + rank)
        self.next_hash = (rank + 1) << 40
        self.live: OrderedDict[int, int | None] = OrderedDict()    # hash -> parent, oldest first
        self.children: dict[int, int] = {}
        self.prompts = [self._fresh(int(self.rng.integers(4, 12))) for _ in range(groups)]
        self.convs: list[list[int]] = []
        self.queried = self.hits = 0                   # prefix-cache blocks asked / found

    def _fresh(self, n: int) -> list[int]:
        hs = list(range(self.next_hash, self.next_hash + n))
        self.next_hash += n
        return hs

    def _tokens(self, n: int) -> list[int]:
        return self.rng.integers(0, 32_000, n * self.block_size).tolist()

    def _store(self, hashes: list[int], parent: int | None, out: list) -> None:
        new = [h for h in hashes if h not in self.live]
        self.queried += len(hashes)
        self.hits += len(hashes) - len(new)
        if not new:
            return
        p = parent
        for h in hashes:
            if h in self.live:
                self.live.move_to_end(h)
            else:
                self.live[h] = p
                if p is not None:
                    self.children[p] = self.children.get(p, 0) + 1
            p = h
        first = hashes.index(new[0])
        par = parent if first == 0 else hashes[first - 1]
        out.append(BlockStored(block_hashes=new, parent_block_hash=par, token_ids=self._tokens(len(new)),
                               block_size=self.block_size, lora_id=None, medium=MEDIUM_GPU, lora_name=None))

    def _evict(self, out: list) -> None:
        gone = []
        over = len(self.live) - self.capacity
        for h in list(self.live):
            if over <= 0:
                break
            if self.children.get(h, 0) == 0:
                p = self.live.pop(h)
                if p is not None and p in self.children:
                    self.children[p] -= 1
                gone.append(h)
                over -= 1
        if gone:
            out.append(BlockRemoved(block_hashes=gone, medium=MEDIUM_GPU))

    def request(self) -> list:
        """The events of one request: its prompt's blocks (shared prefix + its own
        chain, or the next turn of a conversation), then evictions if over capacity."""
        out: list = []
        r = self.rng.random()
        if r < 0.3 and self.convs:                     # the next turn of a conversation
            conv = self.convs[int(self.rng.integers(len(self.convs)))]
            conv.extend(self._fresh(int(self.rng.integers(1, 4))))
            chain = conv
        else:
            g = min(int(self.rng.zipf(1.6)) - 1, len(self.prompts) - 1)
            chain = self.prompts[g] + self._fresh(int(self.rng.integers(1, 12)))
            if r > 0.9:
                self.convs.append(list(chain))
                self.convs = self.convs[-20:]
        self._store(chain, None, out)
        self._evict(out)
        return out


class FeedServer:
    """`ranks` publishers (port + rank), each with its RankCache."""

    def __init__(self, url: str, replay: str | None, ranks: int = 1, capacity: int = 4096,
                 block_size: int = 16, seed: int = 0):
        self.pubs = [KVEventPublisher(offset_port(url, r), None if replay is None else offset_port(replay, r),
                                      block_size=block_size, data_parallel_rank=r) for r in range(ranks)]
        self.caches = [RankCache(r, capacity, block_size, seed) for r in range(ranks)]
        self.sent: list[float] = []          # wall time (the batch ts) of each step's batches

    def step(self, requests: int = 1) -> int:
        """`requests` requests on every rank, one batch each; returns the batches sent."""
        ts = time.time()
        for pub, cache in zip(self.pubs, self.caches):
            events = [e for _ in range(requests) for e in cache.request()]
            if events:
                pub.publish(events, ts=ts)
        self.sent.append(ts)
        return len(self.pubs)

    def close(self) -> None:
        for p in self.pubs:
            p.close()


class FeedMetrics:
    """The feed's state as vLLM-named Prometheus metrics on http://127.0.0.1:PORT/metrics
    (a registry of its own), so the demo shows the Attach tab's metric plots."""

    def __init__(self, srv: FeedServer, port: int, seed: int = 0):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
        self.srv, self.rng = srv, np.random.default_rng(seed)
        r = CollectorRegistry()
        self.usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage", registry=r)
        self.running = Gauge("vllm:num_requests_running", "running", registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", registry=r)
        self.queries = Counter("vllm:prefix_cache_queries", "blocks queried", registry=r)
        self.hits = Counter("vllm:prefix_cache_hits", "blocks hit", registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", registry=r,
                              buckets=(0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6))
        self._seen = (0, 0)
        start_http_server(port, addr="127.0.0.1", registry=r)

    def update(self) -> None:
        cs = self.srv.caches
        self.usage.set(sum(len(c.live) for c in cs) / sum(c.capacity for c in cs))
        run = 8 + 6 * np.sin(time.monotonic() / 7.0) + self.rng.normal(0, 1)
        self.running.set(max(0, round(run)))
        self.waiting.set(max(0, round(run - 10 + self.rng.normal(0, 1))))
        q, h = sum(c.queried for c in cs), sum(c.hits for c in cs)
        self.queries.inc(q - self._seen[0])
        self.hits.inc(h - self._seen[1])
        self._seen = (q, h)
        self.ttft.observe(float(self.rng.lognormal(np.log(0.12), 0.5)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.bench.attach_feed", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="tcp://*:5611")
    p.add_argument("--replay", default=None)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--capacity", type=int, default=3000, help="blocks per rank")
    p.add_argument("--rate", type=float, default=40.0, help="requests per second per rank")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--metrics-port", type=int, default=None, help="serve vLLM-named metrics here")
    p.add_argument("--delay", type=float, default=0.0, help="wait this long before publishing")
    p.add_argument("--sent-log", default=None, help="write the publish times (JSON list, wall clock)")
    a = p.parse_args(argv)
    srv = FeedServer(a.url, a.replay, a.ranks, a.capacity)
    time.sleep(a.delay)                                # a connecting PUB: let the link come up
    metrics = FeedMetrics(srv, a.metrics_port) if a.metrics_port else None
    end = time.monotonic() + a.seconds
    try:
        while time.monotonic() < end:
            t = time.monotonic()
            srv.step()
            if metrics is not None:
                metrics.update()
            time.sleep(max(0.0, 1.0 / a.rate - (time.monotonic() - t)))
    finally:
        srv.close()
        if a.sent_log:
            from tinyserve_core.writers import write_json
            write_json(a.sent_log, srv.sent, "--sent-log")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
