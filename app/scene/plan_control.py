"""Planning in the Scene tab: the plan panel's fields checked (a bad value is shown
next to its field), the OMPL plan run on the worker, and its answer drawn in the render
view (overlay), the 3D view (path + inflated obstacles) and the panel (metrics).

A mixin of `SceneTab` (tab.py): it owns `plan_result`, reads `lab`, `worker`,
`plan_panel`, `view` and `view3d`, and times plan -> drawn path in `timings`."""

from __future__ import annotations

import time

from tinyserve_core.errors import ConfigError


def _pose(goal) -> str:
    """Ground goals are x, y, yaw (radians); gripper goals x, y, z."""
    return "(" + ", ".join(f"{v:.2f}" for v in goal) + ")"


class PlanControl:
    def plan_settings(self):
        """(target, Robot, planner) from the fields; a bad value is shown next to its field."""
        from tinyserve_core.scene.planner import PLANNERS, Robot

        p = self.plan_panel
        for e in (p.radius_error, p.target_error, p.planner_error):
            e.show_error("")
        target = p.target.currentText()
        if not target:
            p.target_error.show_error("target: ask a query or choose an object")
            return None
        try:
            radius = float(p.radius.text())
        except ValueError:
            p.radius_error.show_error(f"radius: must be a number of metres, got {p.radius.text()!r}")
            return None
        try:
            robot = Robot(p.robot.currentText(), radius)
        except ConfigError as e:
            p.radius_error.show_error(str(e))
            return None
        if p.planner.currentText() not in PLANNERS:
            p.planner_error.show_error(f"planner: must be one of {', '.join(PLANNERS)}")
            return None
        return target, robot, p.planner.currentText()

    def plan(self):
        s = self.plan_settings()
        if s is None or self.lab is None:
            return
        self.plan_panel.result.setText(f"planning a path to {s[0]}...")
        self._pending["plan"] = time.perf_counter()
        self.worker.submit("plan", self._plan_job, *s)

    def _plan_job(self, target, robot, planner):
        res = self.lab.plan(target, robot, planner=planner)
        if self.view3d is None or self.view3d.gl is None:
            return res, None
        from .view3d import blocked_points

        blocked, lo, voxel = self.lab.planner.inflated(robot)
        return res, blocked_points(blocked, lo, voxel, self.view3d.max_blocked)

    def _on_plan(self, out):
        res, blocked = out
        self.plan_result = res
        p = self.plan_panel
        if res.solved:
            p.result.setText(f"<b>path to {res.target}</b> ({res.robot.kind}, r = {res.robot.radius:.2f} m, "
                             f"{res.planner})<br>length <b>{res.length:.2f} m</b>, min clearance "
                             f"<b>{res.min_clearance * 100:.1f} cm</b>, planning <b>{res.planning_ms:.0f} ms</b>, "
                             f"{len(res.path)} waypoints<br>goal {_pose(res.goal)}, {res.approach_distance:.2f} m "
                             f"from {res.target} ({res.approach})")
        else:
            p.result.setText(f"<span style='color:#e0473c'><b>NO PATH</b> ({res.status})</span>: {res.message}")
        self.redraw()
        self.view.repaint()
        if self.view3d is not None:
            self.view3d.set_blocked(blocked)
            self.view3d.set_path(res.path if res.solved else None)
        self.timings["plan_to_draw_ms"] = (time.perf_counter() - self._pending.pop("plan")) * 1000

    def clear_path(self):
        self.plan_result = None
        self.plan_panel.result.setText("")
        if self.view3d is not None:
            self.view3d.set_path(None)
            self.view3d.set_blocked(None)
        self.redraw()
