"""The table widths decode graphs are captured at (engine/cuda_graphs.py): with selection,
at most 1.5x the widest table of the batch, never past the runner's widest table."""

from tinyserve_core.engine.cuda_graphs import _selection_width, _width_bucket


def test_selection_widths_are_half_octaves_that_hold_the_table():
    for m in range(1, 9000, 7):
        w = _selection_width(m, 16384)
        assert w >= m and w >= 16
        assert w <= max(16, 1.5 * m) or w == _width_bucket(m) <= 2 * m   # at most 1.5x above 32 pages
        assert w in {16, 24} | {b for k in range(5, 15) for b in (1 << k, 3 << (k - 1))}
    assert _selection_width(2049, 8192) == 3072     # 32K tokens in 16-token pages: 3072, not 8192
    assert _selection_width(8000, 4096) == 4096     # capped at the runner's widest table
