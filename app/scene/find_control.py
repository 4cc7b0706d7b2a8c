"""Finding things in the Scene tab: a click picks the pixel's object, a typed query
ranks the objects (found / ambiguous / not found, with boxes and relevancy), and "Jump
to best view" moves the camera to where the answer shows best.

A mixin of `SceneTab` (tab.py): it submits jobs to `worker` and, on their results,
sets `pick_result` / `query_result`, appends to `query_log`, fills `pick_info` and the
query panel, and times query -> painted overlay in `timings`."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt

from .orbit import Orbit


class FindControl:
    # ---- pick -----------------------------------------------------------------------------
    def _on_click(self, x: float, y: float):
        if self.frame is None:
            return
        self.pick_at(x, y)

    def pick_at(self, x: float, y: float):
        """Pick the displayed frame's pixel (x right, y down, in render pixels)."""
        cam = self.frame.result.camera
        self.worker.submit("pick", self.lab.pick, cam, x, y)

    def _on_pick(self, r):
        self.pick_result = r
        if r.hit:
            x, y, z = r.point
            self.pick_info.setText(f"<b>{r.label}</b> &nbsp; confidence {r.confidence:.1%} &nbsp; "
                                   f"at ({x:.3f}, {y:.3f}, {z:.3f}) m, depth {r.depth:.3f} m")
        else:
            self.pick_info.setText("nothing there (background)")
        self.redraw()

    # ---- query ----------------------------------------------------------------------------
    def ask(self, text: str):
        qp = self.query_panel
        text = (text or "").strip()
        if not text:
            qp.error.show_error("query: type what to look for, e.g. \"the red mug\"")
            return
        if self.frame is None:
            qp.error.show_error("query: the scene is still loading")
            return
        qp.error.show_error("")
        qp.status.setText(f"asking \"{text}\"...")
        self._pending["query"] = time.perf_counter()
        self.worker.submit("query", self.lab.query, text, self.frame.result)

    def _on_query(self, q):
        from .exports import query_record

        qp = self.query_panel
        self.query_result = q
        self.query_log.append(query_record(q, time.time()))
        from html import escape

        if q.status == "found":
            c = q.candidates[0]
            qp.status.setText(f"<b>found: {escape(c.label)}</b> (similarity {c.score:.2f}, {q.latency_ms:.0f} ms)")
        elif q.status == "ambiguous":
            names = " or ".join(f"{escape(c.label)} ({c.score:.2f})" for c in q.candidates)
            qp.status.setText(f"<b>ambiguous</b>: {names}; planning takes {escape(q.candidates[0].label)}")
        else:
            best = max(q.scores, key=q.scores.get)
            qp.status.setText(f"<b>not found</b>: nothing here matches \"{escape(q.query)}\" "
                              f"(closest: {escape(best)}, {q.scores[best]:.2f})")
        if q.notes:  # typo corrections and ignored relations: say how the query was read
            qp.status.setText(qp.status.text() + "<br><i>" + escape("; ".join(q.notes)) + "</i>")
        qp.best_view.setEnabled(bool(q.candidates))
        if q.candidates:
            i = self.plan_panel.target.findText(q.candidates[0].label)
            if i >= 0:
                self.plan_panel.target.setCurrentIndex(i)
        item_text = f"{q.query}  ->  {q.label}"
        qp.history.insertItem(0, item_text)
        qp.history.item(0).setData(Qt.ItemDataRole.UserRole, q.query)
        self.output.blockSignals(True)
        self.output.setCurrentText("Query relevancy")
        self.output.blockSignals(False)
        self.redraw()
        self.view.repaint()
        self.timings["query_to_overlay_ms"] = (time.perf_counter() - self._pending.pop("query")) * 1000

    def jump_to_best_view(self):
        q = self.query_result
        if q is None or not q.candidates:
            return
        self.worker.submit("best_view", self._best_view_job, q.candidates[0].label)

    def _best_view_job(self, label: str):
        cam = self.lab.best_view(label, size=self.render_size)
        return Orbit.looking_from(cam.position, self.lab.bake.extents()[label].centroid, cam.fov_y)

    def _on_best_view(self, orbit: Orbit):
        self.set_orbit(orbit)
