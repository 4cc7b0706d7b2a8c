"""The render view's camera: an orbit (azimuth, elevation, distance) about a target point,
moved by mouse drags and the wheel, turned into a `Camera` of the scene core."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

MIN_ELEVATION, MAX_ELEVATION = -10.0, 89.0
DEGREES_PER_PIXEL = 0.4


@dataclass(frozen=True)
class Orbit:
    target: tuple[float, float, float]
    azimuth: float = 30.0
    elevation: float = 40.0
    distance: float = 3.0
    fov_y: float = 50.0
    min_distance: float = field(default=0.3, compare=False)
    max_distance: float = field(default=12.0, compare=False)

    def orbited(self, dx: float, dy: float) -> "Orbit":
        """Dragging right turns the scene right (the camera goes left round it)."""
        el = min(MAX_ELEVATION, max(MIN_ELEVATION, self.elevation + dy * DEGREES_PER_PIXEL))
        return replace(self, azimuth=(self.azimuth - dx * DEGREES_PER_PIXEL) % 360.0, elevation=el)

    def zoomed(self, steps: float) -> "Orbit":
        """Positive steps move closer, 10% per step."""
        d = self.distance * (0.9 ** steps)
        return replace(self, distance=min(self.max_distance, max(self.min_distance, d)))

    def panned(self, dx: float, dy: float, view_px: int) -> "Orbit":
        """Moves the target in the image plane so the scene follows the cursor."""
        c2w = self.c2w()
        metres_per_px = 2 * self.distance * math.tan(math.radians(self.fov_y) / 2) / max(1, view_px)
        shift = (-dx * c2w[:3, 0] + dy * c2w[:3, 1]) * metres_per_px
        return replace(self, target=tuple(float(v) for v in np.asarray(self.target) + shift))

    def eye(self) -> np.ndarray:
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        return np.asarray(self.target) + self.distance * np.array(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])

    def c2w(self) -> np.ndarray:
        from tinyserve_core.scene.camera import look_at

        return look_at(self.eye(), self.target)

    def camera(self, size: int):
        from tinyserve_core.scene.camera import Camera

        return Camera(self.c2w(), size, size, self.fov_y)

    @classmethod
    def looking_from(cls, eye, target, fov_y: float = 50.0) -> "Orbit":
        """The orbit whose camera sits at `eye` looking at `target` (e.g. a best view)."""
        v = np.asarray(eye, dtype=float) - np.asarray(target, dtype=float)
        dist = float(np.linalg.norm(v))
        el = math.degrees(math.asin(max(-1.0, min(1.0, v[2] / dist))))
        az = math.degrees(math.atan2(v[1], v[0])) % 360.0
        return cls(tuple(float(t) for t in target), az, el, dist, fov_y)
