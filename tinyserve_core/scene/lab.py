"""SceneLab: one object the CLI, the eval and the GUI drive — a scene with its trained
field, bake, object index and planner, each built on first use."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .bake import Bake, RenderResult, as_result
from .camera import Camera, orbit_camera
from .planner import PlanResult, Planner, Robot
from .query import ObjectIndex, QueryResult
from .spec import DEFAULT_SCENE, SceneSpec, load_scene
from .interactive import EmptySpace, render_fast
from .volume import WEIGHT_EPS, ray_aabb
from .weights import load_weights, weights_path

# Where a robot starts when neither the caller nor the scene's `planning.starts` says.
DEFAULT_STARTS = {"ground": (-0.9, 0.5, 0.0), "gripper": (-1.0, 0.5, 0.9)}


def render_device(name: str) -> torch.device:
    """"auto" is the GPU when torch sees one; a named device that is absent is a ConfigError."""
    from ..errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", f"must be 'cpu', 'cuda' or 'auto', got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA is not available to torch here; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError("device", f"must be 'cpu', 'cuda' or 'auto', got {name!r}")
    return dev


@dataclass
class PickResult:
    hit: bool
    point: tuple[float, float, float] | None  # world position of the expected depth
    depth: float
    label: str
    confidence: float  # the rendered class probability of that label


class SceneLab:
    """`device` is where frames are rendered ("cpu", "cuda", "auto": a GPU when there is
    one); the bake's read-outs (extents, planning, points) stay on the host."""

    def __init__(self, scene: str | Path = DEFAULT_SCENE, weights: str | Path | None = None, device: str = "cpu"):
        self.spec: SceneSpec = load_scene(scene)
        self.weights_file = Path(weights) if weights else weights_path(self.spec)
        self.device = render_device(device)
        self.field, self.occ, self.meta = load_weights(self.weights_file, self.spec)
        self.bake = Bake.from_field(self.field, self.occ, self.spec.labels, self.spec.background)
        self._frames = self.bake.to(self.device)
        self._field = copy.deepcopy(self.field).to(self.device) if self.device.type != "cpu" else self.field
        self._field_space = EmptySpace(self.field.grid, self.occ.to(self.device))
        self._index: ObjectIndex | None = None
        self._planner: Planner | None = None

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    @property
    def index(self) -> ObjectIndex:
        if self._index is None:
            self._index = ObjectIndex(self.spec, self.bake.extents())
        return self._index

    @property
    def planner(self) -> Planner:
        if self._planner is None:
            self._planner = Planner(self.bake, floor_label=self.spec.floor_label,
                                    structure=tuple(o.label for o in self.spec.objects if o.structure))
        return self._planner

    def camera(self, azimuth: float = 30.0, elevation: float = 40.0, distance: float | None = None,
               size: int = 256, target=None, fov_y: float = 50.0) -> Camera:
        return orbit_camera(target if target is not None else self.spec.camera_target, azimuth, elevation,
                            distance or self.spec.camera_distance, size, size, fov_y)

    def prepare_frames(self) -> None:
        """Builds or loads the compiled frame library now (about a second on a first use,
        longer with nvcc), so the first interactive frame does not wait for it."""
        self._frames.compiled_image()

    @torch.no_grad()
    def render(self, cam: Camera, quality: str = "bake") -> RenderResult:
        """quality="motion" while the camera moves (the bake, coarser march), "bake" for
        navigation (no MLP), "full" for the trained field itself."""
        if quality in ("bake", "motion"):
            return self._frames.render(cam, coarse=quality == "motion")
        if quality != "full":
            raise ConfigError("quality", f"must be 'motion', 'bake' or 'full', got {quality!r}")
        o, d = cam.rays()
        return as_result(self.render_full_rays(o, d), cam)

    @torch.no_grad()
    def render_full_rays(self, o: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
        """The trained field itself (MLP colour and classes at every sample) along rays,
        on the lab's device; the GUI calls it chunk by chunk so a refine can be cut short."""
        return render_fast(self._field, self._field_space, o.to(self.device), d.to(self.device),
                           self.field.grid.voxel / 2, self.spec.background, app_eps=WEIGHT_EPS)

    @torch.no_grad()
    def pick(self, cam: Camera, x: float, y: float) -> PickResult:
        """Pixel (x right, y down; pixel centres at +0.5) -> ray -> expected depth -> point."""
        o, d = cam.pixel_rays(torch.tensor([float(x)]), torch.tensor([float(y)]))
        out = self.bake.render_rays(o, d, preview=False)
        probs = out["probs"][0]
        k = int(probs.argmax())
        if float(out["acc"][0]) < 0.5:
            return PickResult(False, None, float("inf"), self.labels[0], float(probs[0]))
        # the rendered depth gives the empty remainder the far distance; the surface is
        # the weighted mean over what was hit
        _, far = ray_aabb(o, d, self.field.grid.lo, self.field.grid.hi)
        acc = float(out["acc"][0])
        depth = (float(out["depth"][0]) - (1 - acc) * float(far[0])) / acc
        p = (o[0] + depth * d[0]).tolist()
        return PickResult(True, tuple(p), depth, self.labels[k], float(probs[k]))

    def query(self, text: str, render: RenderResult | None = None) -> QueryResult:
        """`best` is None when nothing was found; with a render, "left" and "right" are as its camera sees them."""
        if render is None:
            return self.index.query(text)
        return self.index.query(text, render.probs, render.camera.c2w)

    def plan(self, target: str | QueryResult, robot: Robot = Robot(), start=None, planner: str = "rrtconnect",
             timeout: float = 1.0) -> PlanResult:
        """A path to an object label or to a query's answer. For an ambiguous query the
        candidates are tried best first and the result's `note` says which one was taken."""
        start = start if start is not None else self.default_start(robot.kind)
        if not isinstance(target, QueryResult):
            return self.planner.plan(robot, target, start, planner, timeout)
        if target.best is None:
            raise ConfigError("target", f"the query {target.query!r} found nothing to plan to")
        res = None
        for c in target.candidates:
            res = self.planner.plan(robot, c.label, start, planner, timeout)
            if res.solved:
                break
        if target.status == "ambiguous":
            names = ", ".join(c.label for c in target.candidates)
            res.note = (f"{target.query!r} is ambiguous ({names}): planned to {res.target!r}"
                        + ("" if res.solved else ", and none of them is reachable"))
        return res

    def default_start(self, kind: str) -> tuple[float, ...]:
        """The scene's own start for this robot kind (its spec's `planning.starts`), else DEFAULT_STARTS."""
        return (self.spec.layout.starts or {}).get(kind, DEFAULT_STARTS[kind])

    @torch.no_grad()
    def best_view(self, label: str, size: int = 256, probe: int = 32) -> Camera:
        """The orbit view centred on the object that shows the most of it (by label count in
        small probe renders of the bake)."""
        ext = self.bake.extents().get(label)
        if ext is None:
            self.spec.object(label)  # raises the error naming the available labels
            return self.camera(size=size)
        k = self.labels.index(label)
        centre = np.array(ext.centroid)
        radius = float(np.linalg.norm(np.array(ext.bbox_max) - np.array(ext.bbox_min))) / 2
        dist = max(0.8, 2.5 * radius / math.tan(math.radians(25)))
        best, best_count = None, -1
        for elev in (35.0, 55.0):
            for az in range(0, 360, 30):
                cam = orbit_camera(centre, az, elev, dist, probe, probe)
                count = int((self.bake.render(cam).label == k).sum())
                if count > best_count:
                    best, best_count = (az, elev), count
        return orbit_camera(centre, best[0], best[1], dist, size, size)
