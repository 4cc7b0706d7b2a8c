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


def test_not_found_under_the_threshold(lab, frame):
    r = lab.query("a giraffe", frame)
    assert r.status == "not found" and r.candidates == [] and not r.relevancy.any()


def test_empty_query_is_rejected(lab):
    with pytest.raises(ConfigError):
        lab.query("   ")
