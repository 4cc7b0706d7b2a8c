"""tools/gpu_tune.py's choice of a tuning row, on fake timings (CPU only): the grid point
whose plan choices sum to the least time relative to each shape's best wins, every
distinct choice is timed once, and ties keep the earlier point (the shipped constants)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
spec = importlib.util.spec_from_file_location("gpu_tune", Path(__file__).parents[2] / "tools" / "gpu_tune.py")
gpu_tune = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_tune)

BASE = {"name": "default", "split_min_tiles": 8, "split_cost": 0.002, "max_splits": 256,
        "score_max_ppc": 128, "score_min_ctas_per_sm": 8.0, "decode_l2_prefetch": 0,
        "sparse_fused_max_batch": 8, "decode_merge_max_splits": 4}


class FakeExt:
    """The plan picks split_min_tiles splits (a stand-in for the real plan)."""

    def __init__(self):
        self.args = None

    def set_tuning(self, *args):
        self.args = args

    def choice(self, shape, point=None):
        return self.args[0]


def test_best_point_minimises_relative_time_and_times_each_choice_once():
    us = {("a", 8): 10.0, ("a", 2): 5.0, ("a", 4): 6.0, ("b", 8): 10.0, ("b", 2): 30.0, ("b", 4): 11.0}
    calls = []

    def measure(shape, choice):
        calls.append((shape, choice))
        return us[(shape, choice)]

    timed, ext = gpu_tune.Timed(measure), FakeExt()
    grid = [{"split_min_tiles": k} for k in (8, 2, 4)]
    for shape in ("a", "b"):
        for point in grid:  # the script times every choice before fitting
            ext.set_tuning(*gpu_tune.tuning.args_of({**BASE, **point}))
            timed(shape, ext.choice(shape))
    best, rel = gpu_tune._best(grid, ext.choice, timed, ["a", "b"], BASE, ext)
    # 8: 10/5 + 10/10 = 3.0; 2: 1 + 3 = 4.0; 4: 6/5 + 11/10 = 2.3
    assert best == {"split_min_tiles": 4} and rel == pytest.approx(2.3 / 2)
    assert len(calls) == len(set(calls)) == 6


def test_ties_keep_the_earlier_point():
    timed, ext = gpu_tune.Timed(lambda shape, choice: 1.0), FakeExt()
    grid = [{"split_min_tiles": k} for k in (8, 2)]
    best, _ = gpu_tune._best(grid, ext.choice, timed, ["a"], BASE, ext)
    assert best == {"split_min_tiles": 8}
