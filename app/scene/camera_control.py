"""The Scene tab's camera and render requests: orbit/pan/zoom from the render view,
progressive quality (a cheap bake frame while moving, the full field once the mouse
rests), and the adaptive motion resolution that keeps orbiting at >= 10 frames/s.

A mixin of `SceneTab` (tab.py): it reads the tab's `lab`, `worker`, `view`, `view3d` and
`_still` timer, and owns `orbit`, `render_size`, `adaptive`, `frame`, `_seq`,
`_ms_per_px` and `_refine_after` (set up in `SceneTab.__init__`)."""

from __future__ import annotations

from .orbit import Orbit

STILL_MS = 250  # no camera motion for this long -> refine at full quality
MOTION_BUDGET_MS = 70.0  # worker time per frame while moving, leaving room for >= 10 fps
MIN_MOTION_SIZE = 96
RENDER_SIZES = (128, 256, 384, 512)


class CameraControl:
    def motion_size(self) -> int:
        """The bake's side while the camera moves: the full size if it fits the frame
        budget, else the largest that does (the view scales it up; the still refine
        restores every pixel)."""
        if not self.adaptive or self._ms_per_px is None:
            return self.render_size
        side = int((MOTION_BUDGET_MS / self._ms_per_px) ** 0.5) // 16 * 16
        return max(min(MIN_MOTION_SIZE, self.render_size), min(self.render_size, side))

    def request_frame(self, quality: str, size: int | None = None):
        if self.lab is None:
            return
        self._seq += 1
        size = size or (self.motion_size() if quality == "motion" else self.render_size)
        self.worker.request_render(self.orbit.camera(size), quality, self._seq)

    def _on_still(self):
        """Resting: the bake at full resolution at once, then the field's full quality."""
        self.request_frame("bake", self.render_size)
        self._refine_after = self._seq

    def _on_frame(self, frame):
        if self.lab is None or (self.frame is not None and frame.seq < self.frame.seq) or frame.seq < self._first_seq:
            return  # an older request finishing late, or one of the scene shown before
        self.frame = frame
        if frame.quality == "motion":
            px = frame.result.camera.width * frame.result.camera.height
            rate = frame.ms / px
            self._ms_per_px = rate if self._ms_per_px is None else 0.7 * self._ms_per_px + 0.3 * rate
        if frame.seq == self._refine_after:
            self._refine_after = None
            self.request_frame("full")
        self.redraw()
        self.view.hud = f"{frame.quality} {frame.result.camera.width}px  {frame.ms:.0f} ms"
        if self.view3d is not None and frame.quality == "full":
            # only at rest: redrawing the cloud per orbit frame (software GL) would stall the GUI
            self.view3d.set_camera(frame.result.camera)

    # ---- navigation -----------------------------------------------------------------------
    def _on_drag(self, kind: str, dx: float, dy: float):
        if self.orbit is None:
            return
        self.orbit = self.orbit.orbited(dx, dy) if kind == "orbit" else self.orbit.panned(dx, dy, self.render_size)
        self.request_frame("motion")
        self._still.start()

    def _arm_refine(self):
        self._still.start()

    def _on_wheel(self, steps: float):
        if self.orbit is None:
            return
        self.orbit = self.orbit.zoomed(steps)
        self.request_frame("motion")
        self._still.start()

    def _on_size(self, i: int):
        self.render_size = RENDER_SIZES[i]
        self.request_frame("motion")
        self._still.start()

    def set_orbit(self, orbit: Orbit):
        self.orbit = orbit
        self.request_frame("motion")
        self._still.start()

    def reset_view(self):
        if self.lab is not None:
            self.set_orbit(self.home)
