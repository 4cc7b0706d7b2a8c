"""The Attach tab's Qt-free data: the painted block image (bands, shades, slots) and
the compressed prefix forest with its budgets."""

from __future__ import annotations

from app.attach.block_image import paint
from app.attach.forest_data import top_trees
from app.attach.spec import AttachSpec
from tinyserve_core.attach.cache_model import CacheModel
from tinyserve_core.attach.wire import decode_payload

from .publisher import payload, stored


def model_of(*batches):
    m = CacheModel()
    for rank, ts, events in batches:
        m.apply(decode_payload(payload(events, ts=ts)), rank)
    return m


def forest(m, **kw):
    bm = m.block_map()
    live, par = m.parent_slots()
    return top_trees(live, par, bm.root, bm.rank, bm.medium, bm.media, **kw)


def test_paint_layout_bands_and_shades():
    m = model_of((0, 10.0, [stored([1, 2, 3]), stored([7], medium="CPU")]), (1, 20.0, [stored([5])]))
    img = paint(m.block_map(), "age", width=32)
    assert [(b.rank, b.medium, b.blocks) for b in img.bands] == [(0, "GPU", 3), (0, "CPU", 1), (1, "GPU", 1)]
    assert [b.row0 for b in img.bands] == [0, 2, 4]                 # a blank row between bands
    assert img.rgba[4, 0, :3].astype(int).sum() > img.rgba[0, 0, :3].astype(int).sum()   # new is bright
    assert img.slot_at(4, 0) >= 0 and img.slot_at(1, 0) == -1 and img.slot_at(0, 3) == -1
    assert img.cell_of(img.slot_at(2, 0)) == (2, 0)


def test_paint_by_reuse_brightens_restored_blocks():
    m = model_of((0, 1.0, [stored([1]), stored([2])]), (0, 2.0, [stored([1])]), (0, 3.0, [stored([1])]))
    img = paint(m.block_map(), "reuse", width=8)
    a, b = (img.rgba[0, i, :3].astype(int).sum() for i in range(2))
    assert img.slot_at(0, 0) < img.slot_at(0, 1) and a > b         # block 1 re-stored twice


def test_forest_folds_chains_and_shows_the_shared_prefix():
    m = model_of((0, 1.0, [stored([1, 2, 3]), stored([4, 5], parent=2), stored([9])]))
    trees = forest(m)
    assert [t.blocks for t in trees] == [5, 1]
    top = trees[0].top
    assert (top.length, top.depth0, top.subtree) == (2, 1, 5)
    assert sorted((c.length, c.depth0) for c in top.children) == [(1, 3), (2, 3)]


def test_forest_budgets_cut_big_trees_short():
    chain = list(range(100, 400))
    m = model_of((0, 1.0, [stored(chain)] + [stored([1000 + i], parent=150) for i in range(10)]))
    t = forest(m, max_blocks=50)[0]                # the walk ends at the branch point: 11 chains undrawn
    assert t.blocks == 310 and t.top.length == 51 and t.top.truncated == 11 and not t.top.children
    t = forest(m, max_nodes=4)[0]
    assert t.top.length == 51 and len(t.top.children) == 3 and t.top.truncated == 8


def test_spec_round_trips_and_names_bad_fields(tmp_path):
    import pytest

    from tinyserve_core.errors import ConfigError
    s = AttachSpec(kv_events=["tcp://h:5557"], data_parallel_size=2, replay=["tcp://h:5558"])
    assert AttachSpec.from_json(s.to_json()) == s and AttachSpec.from_json("{not json") == AttachSpec()
    assert [e.url for e in s.validate()] == ["tcp://h:5557", "tcp://h:5558"]
    for bad, field in ((AttachSpec(), "kv_events"), (AttachSpec(recording=str(tmp_path / "no")), "recording"),
                       (AttachSpec(kv_events=["tcp://h:1"], tokenizer=str(tmp_path / "no")), "tokenizer")):
        with pytest.raises(ConfigError) as e:
            bad.validate()
        assert e.value.field == field
