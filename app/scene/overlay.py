"""The Scene tab's picture: the chosen output colourised, and the overlays projected
through the displayed frame's camera (the picked point, the query's boxes, the planned
path, hidden where the frame's depth shows a nearer surface). Recomputed per frame, so
every overlay follows the camera.

A mixin of `SceneTab` (tab.py): it reads `frame`, `lab`, `output`, `note`, `view`,
`pick_result`, `query_result` and `plan_result`, and writes only the view."""

from __future__ import annotations

from itertools import cycle

import numpy as np
from PySide6.QtGui import QColor

from .colorize import colorize

# one colour per candidate, cycled: an ambiguous answer may name three or more objects
CANDIDATE_COLOURS = (QColor(255, 140, 0), QColor(200, 80, 255), QColor(0, 170, 120), QColor(230, 60, 120))
OUTPUT_NOTES = {"Depth": "depth: near bright, far dark; white = nothing hit",
                "Label entropy": "label entropy: dark = certain, bright = uncertain (object borders)",
                "Query relevancy": "relevancy to the last query: hot = relevant"}


class OverlayDrawing:
    def relevancy(self):
        """The last query's relevancy for the displayed frame (recomputed per frame so the
        overlay follows the camera)."""
        q = self.query_result
        if q is None or self.frame is None:
            return None
        from tinyserve_core.scene.query import ObjectIndex

        sims = np.array([q.scores[n] for n in self.lab.labels[1:]])
        picks = [self.lab.labels.index(c.label) - 1 for c in q.candidates]
        return ObjectIndex.relevancy(sims, self.frame.result.probs, picks)

    def redraw(self):
        if self.frame is None:
            return
        out = self.output.currentText()
        self.view.set_image(colorize(self.frame.result, out, self.relevancy() if out == "Query relevancy" else None))
        self.note.setText(OUTPUT_NOTES.get(out, ""))
        cam = self.frame.result.camera
        ov = self.view.overlays
        ov.pick = None
        if self.pick_result is not None and self.pick_result.hit:
            uv, front = cam.project(np.array([self.pick_result.point]))
            if front[0]:
                ov.pick = (uv[0, 0], uv[0, 1], f"{self.pick_result.label} {self.pick_result.confidence:.0%}")
        ov.boxes = []
        if self.query_result is not None:
            amb = self.query_result.status == "ambiguous"
            for c, colour in zip(self.query_result.candidates, cycle(CANDIDATE_COLOURS)):
                if c.extent is not None:
                    uv, front = cam.project(box_corners(c.extent, self.lab.bake.grid.voxel))
                    ov.boxes.append((uv, front, colour, c.label + ("?" if amb else "")))
        ov.path = None
        if self.plan_result is not None and self.plan_result.solved:
            ov.path = visible_points(cam, self.frame.result.depth, self.plan_result.path)
        self.view.update()


OCCLUSION_SLACK = 0.06  # m: a path on the floor lies on the surface the render sees there


def visible_points(cam, depth: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uv [N, 2], shown [N]): the points projected, shown where they are in front of the
    camera and no nearer surface of the rendered frame hides them, so a path that runs
    under a tabletop disappears beneath it instead of being drawn across it. depth is the
    frame's expected ray distance (empty pixels carry the far distance, never occluding)."""
    pts = np.asarray(points, dtype=np.float64)
    uv, front = cam.project(pts)
    h, w = depth.shape
    px = np.clip(np.floor(uv).astype(int), 0, [w - 1, h - 1])
    dist = np.linalg.norm(pts - cam.position, axis=1)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    hidden = inside & (depth[px[:, 1], px[:, 0]] < dist - OCCLUSION_SLACK)
    return uv, front & ~hidden


def box_corners(extent, pad: float) -> np.ndarray:
    """The 8 corners of an object's box (index bits: x, y, z), padded by half a voxel so
    the box encloses the surface rather than the solid grid corners."""
    lo = np.asarray(extent.bbox_min) - pad / 2
    hi = np.asarray(extent.bbox_max) + pad / 2
    return np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1], hi[2] if i & 4 else lo[2]]
                     for i in range(8)])
