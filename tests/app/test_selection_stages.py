"""The Cache selection heatmap shows a two-stage selector's stages: kept pages outlined,
candidates that stage 2 dropped marked with corner ticks, other pages unmarked."""

from __future__ import annotations

import numpy as np
import pytest

from tinyserve_core.observe.record import StepRecord
from tinyserve_core.selection.detail import CHANNELS, SelectionDetail
from tinyserve_core.selection.stats import step_summary

pytestmark = pytest.mark.gui


def _record(step, pages, candidates, P=12):
    """A decode step of sequence 1, layer 2, one kv-head: its columnar record."""
    plane = lambda idx: np.isin(np.arange(P), idx)[None, None, None, :]   # noqa: E731  [1, 1, 1, P]
    per_head = np.zeros((1, 1, 1, len(CHANNELS)), np.float32)
    per_head[..., CHANNELS.index("pages_selected")] = len(pages)
    per_head[..., CHANNELS.index("context_pages")] = P
    d = SelectionDetail("twostage", np.array([2]), np.array([1]), per_head, plane(pages), plane(()),
                        (np.arange(P, dtype=np.float32) % 5)[None, None, None, :],
                        None if candidates is None else plane(candidates))
    return StepRecord(step=step, t_start=0.0, t_end=0.0, phase="decode", seq_ids=(1,),
                      selection=(step_summary(step, "twostage", [2], per_head, None, d),))


def test_candidates_not_kept_get_corner_ticks_and_nothing_else_does():
    from app.serving.selection_data import SelectionHistory
    from app.serving.selection_stages import CANDIDATE
    from app.serving.selection_view import OUTLINE, heatmap_rgba

    hist = SelectionHistory()
    hist.ingest(_record(5, (0, 4, 11), (0, 3, 4, 7, 9, 11)))
    hist.ingest(_record(6, (3, 11), (2, 3, 4, 11)))
    v = hist.view((1, 2, 0))
    assert v.candidates is not None
    assert np.flatnonzero(v.candidates[:, 0]).tolist() == [0, 3, 4, 7, 9, 11]
    cell = 6
    img = heatmap_rgba(v, cell)
    corner = lambda p, s: img[p * cell, s * cell]            # noqa: E731  top-left pixel of a cell
    for p in range(12):
        for s, (kept, cand) in enumerate((((0, 4, 11), (0, 3, 4, 7, 9, 11)), ((3, 11), (2, 3, 4, 11)))):
            want = OUTLINE if p in kept else CANDIDATE if p in cand else None
            if want is None:
                assert not (corner(p, s) == CANDIDATE).all() and not (corner(p, s) == OUTLINE).all()
            else:
                assert (corner(p, s) == want).all(), (p, s)
    # the middle of a dropped candidate's cell keeps its score colour
    assert not (img[7 * cell + cell // 2, cell // 2] == CANDIDATE).all()


def test_single_stage_policies_draw_no_candidates():
    from app.serving.selection_data import SelectionHistory
    from app.serving.selection_stages import CANDIDATE
    from app.serving.selection_view import heatmap_rgba

    hist = SelectionHistory()
    hist.ingest(_record(1, (0, 11), None))
    v = hist.view(None)
    assert v.candidates is None
    assert not (heatmap_rgba(v, 6).reshape(-1, 4) == CANDIDATE).all(-1).any()
