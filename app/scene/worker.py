"""The Scene tab's worker thread: it owns the SceneLab and runs every heavy call (load,
render, pick, query, plan, best view) so the GUI thread only paints.

Render requests coalesce: only the newest waits, and a full-quality render in flight
stops between ray chunks when a newer one arrives, so orbiting never queues stale
frames. Jobs the user asked for (pick, query, plan) run first, in order, then the
newest render, then background warm-ups (text encoder, 3D point cloud). Results and errors come back as queued Qt signals.

torch runs single-threaded here: on a CPU shared with other work, two OpenMP threads
spin-waiting on each other made a 256x256 bake frame 50x slower (0.27 s -> 13 s)."""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QThread, Signal

from ..gil import favour_gui_thread

FULL_CHUNK_RAYS = 8192


@dataclass
class Frame:
    seq: int
    quality: str  # "motion" | "bake" | "full"
    result: Any  # RenderResult
    ms: float  # compute time in the worker
    submitted: float  # perf_counter when the GUI asked for it


class _Superseded(Exception):
    pass


class SceneWorker(QThread):
    done = Signal(str, object)  # job kind, result
    failed = Signal(str, str)  # job kind, one-line message

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lab = None
        self._cv = threading.Condition()
        self._jobs: deque = deque()
        self._background: deque = deque()
        self._render: tuple | None = None
        self._quit = False
        self.busy = False
        # OMPL's solve keeps the GIL between its Python callbacks (app/gil.py). `bench
        # scene-gui --scene apartment`, same period: the whole run's longest stall 424 ms
        # at the default 5 ms, 146-160 ms at 1 ms (0.5 ms no better, refines slower).
        favour_gui_thread(0.001)

    # ---- called from the GUI thread --------------------------------------------------
    def submit(self, kind: str, fn: Callable[..., Any], *args, background: bool = False) -> None:
        with self._cv:
            (self._background if background else self._jobs).append((kind, fn, args))
            self._cv.notify()

    def request_render(self, camera, quality: str, seq: int) -> None:
        with self._cv:
            self._render = (camera, quality, seq, time.perf_counter())
            self._cv.notify()

    def drop_background(self) -> None:
        """Forget queued warm-ups (they belong to the scene loaded now)."""
        with self._cv:
            self._background.clear()

    def stop(self) -> None:
        """Drop queued work and return once the job in progress (seconds at most) ends."""
        with self._cv:
            self._quit = True
            self._jobs.clear()
            self._background.clear()
            self._render = None
            self._cv.notify()
        self.wait()

    def idle(self) -> bool:
        with self._cv:
            return not self._jobs and not self._background and self._render is None and not self.busy

    # ---- the thread ------------------------------------------------------------------
    def run(self):
        import torch

        torch.set_num_threads(1)
        while True:
            with self._cv:
                while not self._quit and not self._jobs and self._render is None and not self._background:
                    self._cv.wait()
                if self._quit:
                    return
                if self._jobs:
                    job, render = self._jobs.popleft(), None
                elif self._render is not None:
                    job, render, self._render = None, self._render, None
                else:
                    job, render = self._background.popleft(), None
                self.busy = True
            try:
                if job is not None:
                    kind, fn, args = job
                    try:
                        self.done.emit(kind, fn(*args))
                    except Exception as e:  # shown next to the control that asked
                        self.failed.emit(kind, _one_line(e))
                elif self.lab is not None:
                    try:
                        self.done.emit("render", self._do_render(*render))
                    except _Superseded:  # a user job jumped in: refine again afterwards
                        with self._cv:
                            if self._render is None:
                                self._render = render
                    except Exception as e:
                        self.failed.emit("render", _one_line(e))
            finally:
                with self._cv:
                    self.busy = False

    # ---- jobs (worker thread) ----------------------------------------------------------
    def load(self, scene: str, weights: str | None = None):
        from tinyserve_core.scene.lab import SceneLab

        lab = SceneLab(scene, weights)
        lab.bake.extents()
        lab.prepare_frames()   # the frame library is built or loaded here, not on the first camera move
        self.lab = lab
        return lab

    def _newer_render(self) -> bool:
        with self._cv:
            return self._render is not None or bool(self._jobs) or self._quit

    def _do_render(self, camera, quality: str, seq: int, submitted: float) -> Frame:
        import torch

        t0 = time.perf_counter()
        lab = self.lab
        if quality in ("motion", "bake"):
            res = lab.render(camera, quality)
        else:
            from tinyserve_core.scene.bake import as_result

            o, d = camera.rays()
            parts = []
            for i in range(0, o.shape[0], FULL_CHUNK_RAYS):
                if self._newer_render():
                    raise _Superseded
                parts.append(lab.render_full_rays(o[i:i + FULL_CHUNK_RAYS], d[i:i + FULL_CHUNK_RAYS]))
            res = as_result({k: torch.cat([p[k] for p in parts]) for k in parts[0]}, camera)
        return Frame(seq, quality, res, (time.perf_counter() - t0) * 1000, submitted)


def _one_line(e: Exception) -> str:
    from tinyserve_core.errors import TinyServeError

    if isinstance(e, TinyServeError):
        return str(e)
    tb = traceback.extract_tb(e.__traceback__)
    where = f" ({tb[-1].name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"
