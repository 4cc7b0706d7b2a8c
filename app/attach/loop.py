"""The attach worker's loop, Qt-free: it owns the Attachment (sockets, cache model,
recorder: one thread, no locks) or plays a recording into a model, and hands the GUI
one immutable AttachFrame at a time.

Frames are credit-based, like the engine's snapshots: a new one is built only after
the GUI took the previous one, and no sooner than a few times the cost of the last
build (a 1M-block map costs ~45 ms to read and ~30 ms to paint; a small one ~1 ms, so
a new block reaches the screen within a frame or two). Hover questions (`ask`) are
answered on this thread, which owns the model; the replies wait in `replies`."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from tinyserve_core.attach.cache_model import CacheModel
from tinyserve_core.attach.cache_views import Churn
from tinyserve_core.attach.metrics import Scrape
from tinyserve_core.attach.session import merged_metrics
from tinyserve_core.attach.subscriber import StreamStats
from tinyserve_core.errors import TinyServeError

from ..serving.snapshot import SnapshotBuilder
from .block_image import BlockImage, paint
from .forest_data import Tree, top_trees
from .spec import AttachSpec

MIN_BUILD_S, MAX_BUILD_S = 0.015, 0.4
IDLE_REBUILD_S = 1.0          # ages keep growing with no events: re-shade this often
FOREST_EVERY_S = 3.0


@dataclass(frozen=True)
class AttachFrame:
    number: int
    built_at: float                      # perf_counter when built
    state: str                           # attaching | live | playing | finished | error
    error: str | None
    source: str
    image: BlockImage
    blocks_live: int
    server_t: float                      # server time (batch ts) of the newest event applied
    tree_roots: int
    max_depth: int
    events: dict
    applied: int                         # batches applied so far, every stream
    churn: Churn
    streams: list[StreamStats]
    scrapes: list[Scrape]
    metric_rows: np.ndarray              # serving METRIC_COLUMNS rows since the last frame
    latencies: np.ndarray                # (clock, ttft p50 s, itl p50 s) since the last frame
    forest: list[Tree] | None            # None: unchanged since the previous frame
    progress: tuple[int, int] | None = None   # recording: (messages played, of)


@dataclass
class Reply:
    slot: int
    detail: object | None                # BlockDetail
    text: str | None                     # decoded chain (tokenizer) or token ids
    tag: object = None


@dataclass
class LoopState:
    state: str = "attaching"
    error: str | None = None
    streams: list = field(default_factory=list)
    progress: tuple[int, int] | None = None


class AttachLoop:
    """`run()` until `stop()`; the GUI calls `take()`, `ask()`, `take_replies()`,
    `set_shade()` from its own thread."""

    def __init__(self, spec: AttachSpec, *, replay_timeout_s: float = 2.0, record: str | None = None):
        self.spec = spec
        self.replay_timeout_s = replay_timeout_s
        self.record = record
        self.model = CacheModel()
        self._lock = threading.Lock()
        self._frame: AttachFrame | None = None
        self._credit = True
        self._stop = threading.Event()
        self._asks: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        self.shade = "age"
        self.st = LoopState()
        self.att = None
        self.tokenizer = None
        self._builder = SnapshotBuilder()
        self._scrape_t = 0.0
        self._t0 = time.time()
        self._n = 0
        self._last_build = 0.0
        self._build_cost = 0.0
        self._built_changes = -1
        self._forest_t = 0.0
        self._lat: list[tuple[float, float, float]] = []
        self.on_frame = None              # called (worker thread) when a frame is ready to take

    # ---- the GUI's side ---------------------------------------------------------------
    def take(self) -> AttachFrame | None:
        with self._lock:
            f, self._frame = self._frame, None
            if f is not None:
                self._credit = True
            return f

    def ask(self, slot: int, tag=None) -> None:
        self._asks.put((slot, tag))

    def set_shade(self, shade: str) -> None:
        self.shade = shade
        self._built_changes = -1          # repaint with the new shade

    def stop(self) -> None:
        self._stop.set()

    # ---- the worker's side ---------------------------------------------------------------
    def run(self) -> None:
        try:
            self._open_tokenizer()
            if self.spec.recording:
                self._play()
            else:
                self._live()
        except Exception as e:                  # shown in the status strip, never a dialog
            self.st.state = "error"
            self.st.error = str(e) if isinstance(e, TinyServeError) else f"{type(e).__name__}: {e}"
            self._build(force=True)

    def _open_tokenizer(self) -> None:
        if self.spec.tokenizer:
            from tinyserve_core.model.tokenizer import Tokenizer
            try:
                self.tokenizer = Tokenizer.from_dir(self.spec.tokenizer)
            except Exception as e:               # hover shows token ids instead
                self.st.error = f"tokenizer: {e}"

    def _live(self) -> None:
        from tinyserve_core.attach.session import Attachment
        endpoints = self.spec.validate()
        self.att = Attachment(endpoints, topic=self.spec.topic, bind=self.spec.bind,
                              metrics_urls=self.spec.metrics_urls, record=self.record,
                              replay_timeout_s=self.replay_timeout_s, model=self.model)
        self.st.streams = self.att.streams
        self.st.state = "live"
        try:
            while not self._stop.is_set():
                self.att.poll(timeout_ms=20)
                self._service()
        finally:
            self.att.close()

    def _play(self) -> None:
        from tinyserve_core.attach.recording import load_recording, play
        rec = load_recording(self.spec.recording)
        self.st.state = "playing"
        total = len(rec.messages)
        done = [0]

        def on_message(_m) -> None:
            done[0] += 1
            self.st.progress = (done[0], total)
            self._service()

        streams = play(rec, self.model, speed=self.spec.speed, stop=self._stop.is_set,
                       on_message=on_message)
        self.st.streams = streams
        self.st.state = "finished"
        self._build(force=True)
        while not self._stop.is_set():           # keep answering hovers on the final view
            self._stop.wait(0.05)
            self._service()

    def _service(self) -> None:
        """Between messages: answer hovers, take new scrapes, build a frame when due."""
        while True:
            try:
                slot, tag = self._asks.get_nowait()
            except queue.Empty:
                break
            self.replies.put(self._answer(slot, tag))
        self._take_scrapes()
        self._build()

    def _answer(self, slot: int, tag) -> Reply:
        d = self.model.detail(slot)
        if d is None:
            return Reply(slot, None, None, tag)
        ids = self.model.chain_tokens(slot)
        if ids is None:
            text = None
        elif self.tokenizer is not None:
            text = self.tokenizer.decode(ids)
        else:
            text = "token ids: " + " ".join(map(str, ids[:64])) + (" ..." if len(ids) > 64 else "")
        return Reply(slot, d, text, tag)

    def _take_scrapes(self) -> None:
        if self.att is None:
            return
        scrapes = [s for s in self.att.metrics.latest() if s.error is None]
        if not scrapes:
            return
        t = max(s.t for s in scrapes)
        if t <= self._scrape_t:
            return
        self._scrape_t = t
        vals = {k: v for k, v in merged_metrics(scrapes).items() if v is not None}
        clock = t - self._t0
        self._builder.ingest(Scrape("all", t, vals).step_record(len(self._lat), clock))
        self._lat.append((clock, vals.get("ttft_s_p50", np.nan), vals.get("itl_s_p50", np.nan)))

    def _changes(self) -> int:
        m = self.model
        return m.stored + m.removed + m.cleared + m.reused + sum(s.stats.batches + s.stats.malformed
                                                                  for s in self.st.streams)

    def _build(self, force: bool = False) -> None:
        now = time.perf_counter()
        with self._lock:
            if not self._credit and not force:
                return
        changes = self._changes()
        due = now - self._last_build >= min(MAX_BUILD_S, max(MIN_BUILD_S, 3.0 * self._build_cost))
        stale = now - self._last_build >= IDLE_REBUILD_S
        if not force and not (due and (changes != self._built_changes or stale)):
            return
        self._built_changes = changes
        m = self.model
        bm = m.block_map()
        image = paint(bm, self.shade)
        roots = int((bm.depth == 1).sum()) if len(bm) else 0
        forest = None
        if force or now - self._forest_t >= FOREST_EVERY_S:
            self._forest_t = now
            live, par = m.parent_slots()
            forest = top_trees(live, par, bm.root, bm.rank, bm.medium, bm.media)
        rows, _ = self._builder.take_metrics()
        lat = np.array(self._lat, np.float64).reshape(-1, 3)
        self._lat = []
        streams = [replace(s.stats, other_types=dict(s.stats.other_types)) for s in self.st.streams]
        self._n += 1
        frame = AttachFrame(
            number=self._n, built_at=time.perf_counter(), state=self.st.state, error=self.st.error,
            source=self.spec.describe(), image=image, blocks_live=len(bm), server_t=bm.t, tree_roots=roots,
            max_depth=int(bm.depth.max()) if len(bm) else 0, events=dict(m.events),
            applied=sum(s.batches for s in streams), churn=m.churn(), streams=streams,
            scrapes=list(self.att.metrics.latest()) if self.att is not None else [],
            metric_rows=rows, latencies=lat, forest=forest, progress=self.st.progress)
        self._last_build = time.perf_counter()
        self._build_cost = self._last_build - now
        with self._lock:
            if self._frame is not None and self._frame.forest is not None and forest is None:
                frame = replace(frame, forest=self._frame.forest)   # not yet taken: keep it
            if self._frame is not None and self._frame.metric_rows.size:
                frame = replace(frame, metric_rows=np.concatenate([self._frame.metric_rows, rows]),
                                latencies=np.concatenate([self._frame.latencies, lat]))
            self._frame = frame
            self._credit = False
        if self.on_frame is not None:
            self.on_frame()
