"""Path planning on the baked field with OMPL: a ground robot (SE2, a disc of given radius
on the floor) or a free-flying gripper (R3, a sphere).

Obstacles are the bake's solid corners; a distance transform gives clearance everywhere,
and a state is valid when its clearance exceeds the robot radius plus 1.5 voxels (the
surface may lie up to a voxel from the nearest solid corner, and thin parts such as a
cone's tip are under-dense in the bake). Before OMPL runs, the goal
must share a connected free-space component with the start, so an unreachable goal is
reported at once instead of after a timeout, and never as a path through an obstacle.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from .bake import Bake
from .passages import Passage, bottleneck

PLANNERS = ("rrtconnect", "rrtstar")
ROBOTS = ("ground", "gripper")
GROUND_HEIGHT = 0.5  # the ground robot's body spans the floor up to this height (m)
FLOOR_GAP = 0.04  # obstacles start this far above the floor plane
# How far the target may be (m): a ground robot's arm reaches 0.6 m horizontally from its
# centre; a gripper's fingers close on what lies within 0.12 m of its body (beyond its radius
# and the planning margin, so the limit grows with the gripper: see Planner.reach).
REACH = {"ground": 0.6, "gripper": 0.12}
_seeded = False


@dataclass(frozen=True)
class Robot:
    kind: str = "ground"
    radius: float = 0.12

    def __post_init__(self):
        if self.kind not in ROBOTS:
            raise ConfigError("robot", f"must be one of {', '.join(ROBOTS)}, got {self.kind!r}")
        if not (isinstance(self.radius, (int, float)) and 0.01 <= self.radius <= 1.0):
            raise ConfigError("radius", f"must be a number of metres in [0.01, 1.0], got {self.radius!r}")


@dataclass
class PlanResult:
    status: str  # "solved" | "unreachable" | "invalid start"
    robot: Robot
    target: str
    path: np.ndarray  # [N, 3] x, y, z waypoints (densified), empty unless solved
    yaw: np.ndarray  # [N] heading for the ground robot (zeros for the gripper)
    length: float
    min_clearance: float  # metres from the robot's surface to the nearest obstacle, along the path
    planning_ms: float
    planner: str
    start: tuple[float, ...]
    goal: tuple[float, ...] | None  # ground: x, y, yaw facing the target; gripper: x, y, z
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    approach_distance: float | None = None  # m from the goal's centre to the nearest point of the target
    approach: str = ""  # ground: "beside"; gripper: "above" or "side"
    passage: Passage | None = None  # for an unreachable target: the passage narrower than the robot
    note: str = ""  # which candidate an ambiguous query's plan took

    @property
    def solved(self) -> bool:
        return self.status == "solved"

    def to_dict(self) -> dict:
        return {"status": self.status, "robot": self.robot.kind, "radius": self.robot.radius, "target": self.target,
                "planner": self.planner, "length": self.length, "min_clearance": self.min_clearance,
                "planning_ms": self.planning_ms, "start": list(self.start),
                "goal": None if self.goal is None else list(self.goal), "message": self.message,
                "approach_distance": self.approach_distance, "approach": self.approach, "note": self.note,
                "passage": None if self.passage is None else asdict(self.passage),
                "path": self.path.tolist(), "yaw": self.yaw.tolist()}


class _Map:
    """Clearance (metres from a grid point to the nearest obstacle corner) on a 2D or 3D grid."""

    def __init__(self, obstacles: np.ndarray, lo: np.ndarray, voxel: float):
        self.obstacles = obstacles
        self.lo, self.voxel = lo, voxel
        self.clearance = ndimage.distance_transform_edt(~obstacles, sampling=voxel).astype(np.float32)
        self.shape = np.array(obstacles.shape)

    def index(self, p: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((np.asarray(p) - self.lo) / self.voxel).astype(int), 0, self.shape - 1)

    def point(self, idx) -> np.ndarray:
        return self.lo + np.asarray(idx, dtype=np.float64) * self.voxel

    def inside(self, p) -> bool:
        g = (np.asarray(p) - self.lo) / self.voxel
        return bool(np.all(g >= 0) and np.all(g <= self.shape - 1))

    def at(self, p) -> float:
        """Clearance interpolated multilinearly (the EDT is 1-Lipschitz, so this stays within
        half a voxel of the exact value)."""
        g = (np.asarray(p, dtype=np.float64) - self.lo) / self.voxel
        i0 = np.clip(np.floor(g).astype(int), 0, self.shape - 2)
        f = np.clip(g - i0, 0, 1)
        c = self.clearance[tuple(slice(i, i + 2) for i in i0)]
        for axis in range(len(i0)):
            c = c[0] * (1 - f[axis]) + c[1] * f[axis]
        return float(c)


class Planner:
    """Plans for one bake; maps are built once per robot kind and reused across queries."""

    def __init__(self, bake: Bake, floor_z: float = 0.0, solid_density: float = 5.0, floor_label: str = "floor",
                 structure: tuple[str, ...] = ()):
        self.bake = bake
        self.floor_label = floor_label
        # the building (floor, walls) carries nothing a robot fetches: never a support
        self._not_supports = {floor_label, *structure}
        self.floor_z = floor_z
        self.voxel = bake.grid.voxel
        self.margin = 1.5 * self.voxel
        self.lo = np.array(bake.grid.lo)
        self.solid_density = solid_density
        self.solid = bake.solid(solid_density)  # [X, Y, Z] corners
        zs = self.lo[2] + np.arange(self.solid.shape[2]) * self.voxel
        self._body = (zs >= floor_z + FLOOR_GAP) & (zs <= floor_z + GROUND_HEIGHT)
        self._maps: dict[str, _Map] = {}
        self._comp: dict[tuple, np.ndarray] = {}
        self._regions: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._label_pts = bake.object_points(solid_density)

    def _floor_specks(self) -> np.ndarray:
        """Solid corners [X, Y, Z] the bake labels as the floor: at body height they are
        specks of the floor's surface (seen at z = 0.05 m), not things a wheel bumps into."""
        specks = np.zeros_like(self.solid)
        if self.floor_label in self.bake.labels:
            xyz, _, lab = self.bake.corner_points(self.solid_density)
            pts = xyz[lab == self.bake.labels.index(self.floor_label)]
            specks[tuple(np.rint((pts - self.lo) / self.voxel).astype(int).T)] = True
        return specks

    def map(self, kind: str) -> _Map:
        if kind not in self._maps:
            if kind == "ground":
                body = (self.solid & ~self._floor_specks())[:, :, self._body]
                self._maps[kind] = _Map(body.any(axis=2), self.lo[:2], self.voxel)
            else:
                self._maps[kind] = _Map(self.solid, self.lo, self.voxel)
        return self._maps[kind]

    def inflated(self, robot: Robot) -> tuple[np.ndarray, np.ndarray, float]:
        """(blocked mask, grid origin, voxel) for drawing: grid points [X, Y] (ground) or
        [X, Y, Z] (gripper) where the robot's centre may not go."""
        m = self.map(robot.kind)
        return m.clearance < self._required(robot), m.lo.copy(), self.voxel

    def _components(self, kind: str, need: float, free: np.ndarray) -> np.ndarray:
        key = (kind, round(need, 6))
        if key not in self._comp:
            self._comp[key] = ndimage.label(free)[0]
        return self._comp[key]

    def _required(self, robot: Robot) -> float:
        return robot.radius + self.margin

    def supports(self, target: str) -> list[str]:
        """The objects the target rests on, transitively (the mug's table), less the floor:
        another object whose top, in at least a quarter of the target's outline cells, lies
        from 3 voxels below the target's lowest corner to 5 above it (and below its median
        height). The top per cell, not any cell below: the bake's labels bleed into the
        unseen inside of a thin support (a quarter of the apartment's fruit bowl corners
        lie in and under the 4 cm tabletop), while a wall beside a sofa rises far above
        the sofa's base."""
        pts = self._label_pts
        out, todo = [], [target] if target not in self._not_supports else []
        while todo:
            t = todo.pop()
            cells = np.unique(self._cell_ids(pts[t]))
            base, mid = pts[t][:, 2].min(), np.median(pts[t][:, 2])
            for name, p in pts.items():
                if name == target or name in self._not_supports or name in out or len(p) == 0:
                    continue
                ids = self._cell_ids(p)
                inside = np.isin(ids, cells)
                if not inside.any():
                    continue
                where, first = np.unique(ids[inside], return_inverse=True)
                top = np.full(len(where), -np.inf)
                np.maximum.at(top, first, p[inside, 2])
                ok = int(((top >= base - 3 * self.voxel) & (top <= min(mid, base + 5 * self.voxel))).sum())
                if ok > 0 and ok >= 0.25 * min(len(cells), len(where)):
                    out.append(name)
                    todo.append(name)
        return out

    def _cell_ids(self, p: np.ndarray) -> np.ndarray:
        """One integer per (x, y) grid column of each point."""
        ij = np.rint((p[:, :2] - self.lo[:2]) / self.voxel).astype(np.int64)
        return ij[:, 0] * (int(self.solid.shape[1]) + 1) + ij[:, 1]

    def reach(self, robot: Robot) -> float:
        """The largest approach distance (robot centre to target) a goal may have."""
        return REACH["ground"] if robot.kind == "ground" else self._required(robot) + REACH["gripper"]

    def _object_mask(self, m: _Map, names: list[str], dims: int) -> np.ndarray:
        mask = np.zeros(m.shape, dtype=bool)
        for n in names:
            mask[tuple(m.index(self._label_pts[n][:, :dims]).T)] = True
        return mask

    def approach_region(self, robot: Robot, target: str) -> tuple[np.ndarray, np.ndarray]:
        """(cells where an approach pose may stand, ignoring the robot's own clearance;
        distance of every cell to the target). A ground robot stands outside the footprint
        of the target and of whatever carries it, within REACH of the target; a gripper
        within REACH, level with the target's top or above it."""
        pts = self._label_pts.get(target)
        if pts is None or len(pts) == 0:
            raise ConfigError("target", f"no object {target!r} in the bake; have {', '.join(self._label_pts)}")
        key = (robot, target)
        if key not in self._regions:  # one distance transform per robot and target, not per call
            self._regions[key] = self._region(robot, target, pts)
        return self._regions[key]

    def _region(self, robot: Robot, target: str, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.map(robot.kind)
        dims = 2 if robot.kind == "ground" else 3
        to_obj = ndimage.distance_transform_edt(~self._object_mask(m, [target], dims), sampling=self.voxel)
        region = to_obj <= self.reach(robot)
        if robot.kind == "ground":  # the body stays outside the outline it cannot stand under
            held = self._object_mask(m, [target, *self.supports(target)], dims)
            # the same margin as obstacles: the true outline may lie a voxel beyond the solid corners
            region &= ndimage.distance_transform_edt(~held, sampling=self.voxel) >= self._required(robot)
        else:  # approach from above or beside, never from under a surface
            top = pts[:, 2].max()
            region &= (m.lo[2] + np.arange(m.shape[2]) * self.voxel >= top - 0.05)[None, None, :]
        return region, to_obj

    def approach_goal(self, robot: Robot, target: str, start: np.ndarray, free: np.ndarray) -> np.ndarray | None:
        """Grid index of the free approach pose nearest the target (then nearest the
        start); None when the object has no reachable side."""
        m = self.map(robot.kind)
        dims = 2 if robot.kind == "ground" else 3
        region, to_obj = self.approach_region(robot, target)
        idx = np.argwhere(free & region)
        if len(idx) == 0:
            return None
        d_obj = to_obj[tuple(idx.T)]
        d_start = np.linalg.norm(m.point(idx) - start[:dims], axis=1)
        best = np.lexsort((d_start, np.round(d_obj / self.voxel)))[0]
        return idx[best]

    def _why(self, robot: Robot, target: str, start: np.ndarray, need: float) -> Passage:
        m = self.map(robot.kind)
        region, _ = self.approach_region(robot, target)
        # goals need half a voxel more than the path (see plan), so the passage is measured against that
        return bottleneck(m.clearance, tuple(m.index(start[:2 if robot.kind == "ground" else 3])), region,
                          need + 0.5 * self.voxel, m.lo, self.voxel)

    def plan(self, robot: Robot, target: str, start, planner: str = "rrtconnect", timeout: float = 1.0,
             seed: int = 0) -> PlanResult:
        if planner not in PLANNERS:
            raise ConfigError("planner", f"must be one of {', '.join(PLANNERS)}, got {planner!r}")
        t0 = time.perf_counter()
        m = self.map(robot.kind)
        dims = 2 if robot.kind == "ground" else 3
        start = np.asarray(start, dtype=np.float64)
        if start.shape != (dims if robot.kind == "gripper" else 3,) and not (robot.kind == "ground" and start.shape == (2,)):
            raise ConfigError("start", f"a {robot.kind} start is {'x, y[, yaw]' if dims == 2 else 'x, y, z'}, got {start.tolist()}")
        need = self._required(robot)
        # Goals are chosen in grid space with half a voxel to spare, so the continuous
        # (interpolated) check OMPL runs can always reach them through the same corridor.
        free = m.clearance >= need + 0.5 * self.voxel

        def fail(status: str, msg: str, goal=None, passage: Passage | None = None) -> PlanResult:
            return PlanResult(status, robot, target, np.zeros((0, 3)), np.zeros(0), 0.0, 0.0,
                              (time.perf_counter() - t0) * 1000, planner, tuple(start.tolist()), goal, msg,
                              passage=passage)

        def unreachable(first: str) -> PlanResult:
            why = self._why(robot, target, start, need)
            return fail("unreachable", f"{first}: {why.describe(target)}", passage=why)

        if not m.inside(start[:dims]) or m.at(start[:dims]) < need:
            return fail("invalid start", f"the start is within {need:.2f} m of an obstacle or outside the scene")
        goal_idx = self.approach_goal(robot, target, start, free)
        if goal_idx is None:
            return unreachable(f"no free pose within {self.reach(robot):.2f} m of {target!r} for a "
                               f"{robot.radius:.2f} m {robot.kind}")
        comp = self._components(robot.kind, need, free)
        s_idx = tuple(m.index(start[:dims]))
        if comp[s_idx] == 0 or comp[s_idx] != comp[tuple(goal_idx)]:
            # the goal side is walled off from the start: say so instead of searching
            reach = comp == comp[s_idx] if comp[s_idx] else np.zeros_like(free)
            goal_idx = self.approach_goal(robot, target, start, reach & free)
            if goal_idx is None:
                return unreachable(f"{target!r} cannot be reached from the start")
        goal = m.point(goal_idx)
        approach_distance = float(self.approach_region(robot, target)[1][tuple(goal_idx)])
        if robot.kind == "ground":
            approach = "beside"
        else:  # straight over the target's outline, or level with it
            cells = {tuple(c) for c in m.index(self._label_pts[target])[:, :2]}
            approach = "above" if tuple(goal_idx[:2]) in cells else "side"
        if robot.kind == "ground":  # face the object
            c = self._label_pts[target].mean(0)
            goal = np.append(goal, math.atan2(c[1] - goal[1], c[0] - goal[0]))
        t_prep = time.perf_counter()
        path = self._ompl(robot, m, start, goal, need, planner, timeout, seed)
        t_plan = time.perf_counter()
        if path is None:
            return fail("unreachable", f"{planner} found no exact path in {timeout:.1f} s", tuple(goal.tolist()))
        pts, yaw = self._densify(path, robot)
        clear = np.array([m.at(p[:dims]) for p in pts])
        seg = np.diff(pts[:, :dims], axis=0)
        res = PlanResult("solved", robot, target, pts, yaw, float(np.linalg.norm(seg, axis=1).sum()),
                         float(clear.min() - robot.radius), (time.perf_counter() - t0) * 1000, planner,
                         tuple(start.tolist()), tuple(goal.tolist()))
        res.timings = {"prepare_ms": (t_prep - t0) * 1000, "ompl_ms": (t_plan - t_prep) * 1000}
        res.approach_distance, res.approach = approach_distance, approach
        return res

    def _ompl(self, robot: Robot, m: _Map, start, goal, need: float, planner: str, timeout: float, seed: int):
        from ompl import base as ob, geometric as og, util as ou

        global _seeded
        ou.setLogLevel(ou.LOG_NONE)
        if not _seeded:  # OMPL takes one global seed per process, before its first sample
            ou.RNG.setSeed(seed + 1)  # and refuses 0
            _seeded = True
        hi = m.lo + (m.shape - 1) * self.voxel
        dims = len(m.shape)
        if robot.kind == "ground":
            space = ob.SE2StateSpace()
        else:
            space = ob.RealVectorStateSpace(3)
        bounds = ob.RealVectorBounds(dims)
        for i in range(dims):
            bounds.setLow(i, float(m.lo[i]))
            bounds.setHigh(i, float(hi[i]))
        space.setBounds(bounds)
        ss = og.SimpleSetup(space)
        clearance = m.at

        if robot.kind == "ground":
            def valid(s):
                return clearance((s.getX(), s.getY())) >= need
        else:
            def valid(s):
                return clearance((s[0], s[1], s[2])) >= need
        ss.setStateValidityChecker(valid)
        si = ss.getSpaceInformation()
        # check motions every half voxel so no obstacle slips between two checked states
        si.setStateValidityCheckingResolution(0.5 * self.voxel / space.getMaximumExtent())
        a, b = space.allocState(), space.allocState()
        if robot.kind == "ground":
            a.setX(float(start[0])); a.setY(float(start[1])); a.setYaw(float(start[2]) if len(start) > 2 else 0.0)
            b.setX(float(goal[0])); b.setY(float(goal[1])); b.setYaw(float(goal[2]))
        else:
            for i in range(3):
                a[i] = float(start[i]); b[i] = float(goal[i])
        ss.setStartAndGoalStates(a, b)
        ss.setPlanner(og.RRTConnect(si) if planner == "rrtconnect" else og.RRTstar(si))
        solved = ss.solve(timeout)
        if not solved or not ss.haveExactSolutionPath():
            return None
        ss.simplifySolution()
        p = ss.getSolutionPath()
        if robot.kind == "ground":
            return [(p.getState(i).getX(), p.getState(i).getY(), p.getState(i).getYaw()) for i in range(p.getStateCount())]
        return [(p.getState(i)[0], p.getState(i)[1], p.getState(i)[2]) for i in range(p.getStateCount())]

    def _densify(self, waypoints, robot: Robot) -> tuple[np.ndarray, np.ndarray]:
        """Waypoints every 2 cm; the ground robot carries its height as the floor z."""
        w = np.asarray(waypoints, dtype=np.float64)
        dims = 2 if robot.kind == "ground" else 3
        out = [w[0]]
        for p, q in zip(w[:-1], w[1:]):
            n = max(1, math.ceil(np.linalg.norm(q[:dims] - p[:dims]) / 0.02))
            step = q - p
            if robot.kind == "ground":  # turn the short way round
                step[2] = (step[2] + math.pi) % (2 * math.pi) - math.pi
            for k in range(1, n + 1):
                out.append(p + step * (k / n))
        out = np.array(out)
        if robot.kind == "ground":
            xyz = np.column_stack([out[:, 0], out[:, 1], np.full(len(out), self.floor_z)])
            return xyz, out[:, 2]
        return out, np.zeros(len(out))
