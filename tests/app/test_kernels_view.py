"""The Kernels panel with CUDA graphs kept on while profiling: 'total' every step, the
per-family breakdown from the last sampled step, named in the note."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_graph_steps_timed_whole_and_breakdown_from_the_last_sampled_step(qtbot):
    from app.serving.kernels_view import KernelsView
    view = KernelsView()
    qtbot.addWidget(view)
    eager = {"total": 3e-3, "matmul": 1e-3, "attention": 1.5e-3, "other": 5e-4}
    steps = [(0.01, dict(eager), {"attention": 3_000_000}, 4)]
    steps += [(0.01 * (i + 2), {"total": 1e-3}, {}, 5 + i) for i in range(5)]
    steps += [(0.07, {"total": 2.8e-3, "matmul": 0.9e-3, "attention": 1.4e-3, "other": 5e-4}, {}, 10)]
    steps += [(0.08, {"total": 1.1e-3}, {}, 11)]
    view.add(steps)
    assert view.render()
    assert view.whole_only == 6 and view.sampled == (0.07, 10)
    assert "breakdown sampled eagerly at step 10" in view.note.text()
    rows = {view.table.item(i, 0).text().removeprefix("\u25a0 "): view.table.item(i, 1).text() for i in range(view.table.rowCount())}
    assert rows["total"] == "1.100" and rows["attention"] == "1.400"   # newest step / newest sample
    xs, ys = view.curves["total"].getData()
    assert len(xs) == 8                                                 # a value every step
    xs, ys = view.curves["attention"].getData()
    assert np.allclose(ys, [1.5, 1.4])                                  # only the sampled steps
    view.add([(0.09, {"total": 1e-3}, {})])                             # no step number: its time
    view.render()
    assert "breakdown sampled eagerly at step 10" in view.note.text()
    view.reset()
    view.add([(0.2, {"total": 1e-3}, {}), (0.21, dict(eager), {})])
    view.render()
    assert "engine time 0.210 s" in view.note.text()
