"""The table widths decode graphs are captured at (engine/cuda_graphs.py): with selection,
at most 1.5x the widest table of the batch, never past the runner's widest table."""

from tinyserve_core.engine.cuda_graphs import DecodeGraphs, _selection_width, _width_bucket


def test_selection_widths_are_half_octaves_that_hold_the_table():
    for m in range(1, 9000, 7):
        w = _selection_width(m, 16384)
        assert w >= m and w >= 16
        assert w <= max(16, 1.5 * m) or w == _width_bucket(m) <= 2 * m   # at most 1.5x above 32 pages
        assert w in {16, 24} | {b for k in range(5, 15) for b in (1 << k, 3 << (k - 1))}
    assert _selection_width(2049, 8192) == 3072     # 32K tokens in 16-token pages: 3072, not 8192
    assert _selection_width(8000, 4096) == 4096     # capped at the runner's widest table


class _Rows:
    def __init__(self, max_pages):
        self.tables_rows = type("T", (), {"max_pages": max_pages, "generation": 0})()


def test_graph_width_is_the_widest_without_selection_and_follows_the_batch_with_it():
    g = DecodeGraphs.__new__(DecodeGraphs)   # the width rule alone: no GPU, nothing captured
    g.inputs = _Rows(8192)
    assert g._width(None, 3) == 8192                 # attention alone: one graph per batch bucket
    assert g._width(object(), 2049) == 3072          # selection: the batch's half-octave
    assert g._width(object(), 3) == 512              # never below 512 pages
    g.inputs = _Rows(128)
    assert g._width(object(), 3) == g._width(object(), 128) == 128   # the shipped model: one width


def test_statistics_fit_the_width_even_below_the_selection_floor():
    """Statistics work over every page of the captured table, so a selector that records
    them gets the fitted width even for a small model (where other selectors keep one)."""
    from types import SimpleNamespace

    from tinyserve_core.selection import PageSelector

    graphs = SimpleNamespace(inputs=SimpleNamespace(tables_rows=SimpleNamespace(max_pages=128)))
    width = lambda sel, pages: DecodeGraphs._width(graphs, sel, pages)   # noqa: E731
    stats = PageSelector("quest", budget=0.25, stats=True)
    assert stats.width_bound and not PageSelector("quest", budget=0.25).width_bound
    assert [width(stats, p) for p in (1, 9, 17, 24, 25, 45, 128)] == [16, 16, 24, 24, 32, 48, 128]
    assert [width(PageSelector("quest", budget=0.25), p) for p in (1, 45)] == [128, 128]
    assert [width(None, p) for p in (1, 45)] == [128, 128]
