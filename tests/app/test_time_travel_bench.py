"""`tinyserve bench gui`'s time-travel rows, on a small pool: named as the issue asks,
measured on a real recorded run, and the long history really has the steps it claims."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_time_travel_rows(qapp, gui_config):
    from app.bench.time_travel_gui import long_history, record_run, time_travel_rows
    deltas = record_run(512, 60)
    assert len(deltas) == 60 and any(d.events for d in deltas)
    hist = long_history(deltas, 512, 250)
    assert (hist.first_step, hist.last_step) == (1, 250)
    # step 61 starts the second pass: the first recorded step's state on top of the last
    np.testing.assert_array_equal(hist.state_at(61).pool.num_tokens[deltas[0].filled],
                                  deltas[0].num_tokens)

    rows = time_travel_rows(qapp, 512, record_steps=60, history_steps=250, frames=3, config=gui_config())
    by = {r["case"].split(",")[0]: r for r in rows}
    assert all(r["case"].startswith("time travel") for r in rows)
    assert by["time travel jump"]["p95_ms"] > 0 and by["time travel jump"]["steps"] == 250
    scrub = by["time travel scrub frame"]
    assert scrub["p95_ms"] > 0 and scrub["frames"] == 3 and scrub["cpu_p95_ms"] > 0
    # the frame is the window's: the pool and block tables painted in every frame measured
    assert scrub["frames_painted"]["pool"] == 3 and scrub["frames_painted"]["block tables"] == 3
    assert by["time travel memory"]["mb_per_10k_steps"] > 0
    assert by["time travel event log refresh"]["rows"] > 0
