import numpy as np
import pytest

from tinyserve_core.errors import ConfigError


@pytest.fixture(scope="module")
def frame(lab):
    return lab.render(lab.camera(azimuth=30, elevation=40, size=128))


def test_found_object_with_extent_and_relevancy(lab, spec, frame):
    r = lab.query("the red mug", frame)
    assert r.status == "found" and r.label == "red mug"
    ext = r.candidates[0].extent
    lo, hi = spec.object("red mug").bounds()
    assert np.allclose(ext.centroid, (np.array(lo) + np.array(hi)) / 2, atol=0.05)
    assert np.all(np.array(ext.bbox_min) < np.array(ext.centroid)) and np.all(np.array(ext.centroid) < np.array(ext.bbox_max))
    mug = frame.label == spec.labels.index("red mug")
    assert mug.sum() > 10
    assert r.relevancy[mug].mean() > 0.7 and r.relevancy[~mug].mean() < 0.1


def test_paraphrases_and_functions(lab):
    assert lab.query("something to drink coffee from").label == "red mug"
    assert lab.query("something to read").label == "stack of books"
    assert lab.query("where can I throw away rubbish").label == "trash bin"


def test_ambiguous_returns_both_candidates(lab):
    r = lab.query("a cardboard box")
    assert r.status == "ambiguous"
    assert {c.label for c in r.candidates} == {"blue box", "brown box"}


def test_not_found_has_no_best_and_no_relevancy(lab, frame):
    r = lab.query("a giraffe", frame)
    assert r.status == "not found" and r.candidates == [] and not r.relevancy.any()
    assert r.best is None


def test_not_found_is_calibrated_against_the_scene(lab):
    idx = lab.index
    # concepts the scene's own objects are named by are not "absent": the mug keeps "cup" out
    assert "cup" not in idx.concepts and "piano" in idx.concepts
    assert lab.query("a piano").best is None and lab.query("a sofa").best is None
    # a low absolute similarity is still found when no absent concept comes close
    r = lab.query("something to learn from")
    assert r.label == "stack of books" and r.best.score < 0.7


def test_the_thing_on_the_floor_is_never_the_floor(lab):
    assert lab.query("the ball on the floor").label == "green ball"
    r = lab.query("the box on the floor")
    assert r.status == "ambiguous" and {c.label for c in r.candidates} == {"blue box", "brown box"}
    assert all("floor" not in c.label for c in lab.query("what is on the floor").candidates)


def test_relations_attributes_and_superlatives_use_the_geometry(lab):
    r = lab.query("what is on the table")
    assert r.status == "ambiguous" and {c.label for c in r.candidates} == {"red mug", "stack of books", "desk lamp"}
    assert lab.query("the object next to the table").label == "chair"
    assert lab.query("the biggest thing on the table").label == "desk lamp"
    assert lab.query("the biggest box").label == "blue box" and lab.query("the small box").label == "brown box"
    assert lab.query("something made of rubber").label == "green ball"
    assert lab.query("the yellow object").label == "desk lamp"
    assert lab.query("the thing under the table").best is None
    assert lab.query("the red box").best is None  # nothing red is a box


def test_an_unknown_reference_is_ignored_and_said(lab):
    r = lab.query("the plant near the window")
    assert r.label == "potted plant" and any("window" in n for n in r.notes)


def test_typos_are_corrected_before_encoding(lab):
    r = lab.query("the red mgu")
    assert r.label == "red mug" and r.corrected == "the red mug" and any("mgu" in n for n in r.notes)
    assert lab.query("the trsh bni").label == "trash bin"


def test_empty_query_is_rejected(lab):
    with pytest.raises(ConfigError):
        lab.query("   ")


def test_left_and_right_are_seen_from_the_render_camera(lab):
    assert lab.query("the box on the left").label == "blue box"  # the default view
    behind = lab.render(lab.camera(azimuth=210, elevation=40, size=48))
    assert lab.query("the box on the left", behind).label == "brown box"


def test_a_query_head_is_embedded_once(lab):
    from tinyserve_core.scene.query import _embed_one

    lab.query("the stack of books")
    hits = _embed_one.cache_info().hits
    lab.query("the stack of books")
    assert _embed_one.cache_info().hits > hits and not _embed_one("stack of books").flags.writeable
