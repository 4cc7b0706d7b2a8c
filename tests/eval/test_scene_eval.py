"""`tinyserve_core.eval.scene`: the query files it reads and the full evaluation's targets."""

import pytest

from tinyserve_core.errors import InputFileError
from tinyserve_core.eval.scene import default_queries, load_queries


@pytest.fixture(scope="module")
def spec():
    from tinyserve_core.scene.spec import load_scene

    return load_scene("room")


def test_default_query_set_is_valid_and_covers_every_kind(spec):
    qs = load_queries(default_queries("room"), spec.labels[1:])
    kinds = {q["expected"] for q in qs}
    assert {"ambiguous", "not found"} <= kinds and len(kinds) >= 12
    assert any("drink coffee" in q["query"] for q in qs)


@pytest.mark.parametrize("lines, line_no", [
    (['{"query": "mug", "expected": "red mug"}', '{"query": "mug", "expected": '], 2),
    (['{"query": "mug", "expected": "red mug"}', '', '{"query": "x", "expected": "unicorn"}'], 3),
    (['["not", "an", "object"]'], 1),
    (['{"query": "", "expected": "red mug"}'], 1),
])
def test_malformed_query_file_names_the_line(tmp_path, spec, lines, line_no):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError) as e:
        load_queries(path, spec.labels[1:])
    assert e.value.line == line_no and f"q.jsonl:{line_no}" in str(e.value)


@pytest.mark.slow
def test_full_eval_meets_the_targets(tmp_path):
    from tinyserve_core.eval.scene import evaluate

    rep = evaluate("room")
    assert rep["views_full"]["psnr"] >= 30 and rep["views_full"]["miou"] >= 0.9
    assert rep["queries"]["accuracy"] >= 0.9
    assert rep["planning"]["collision_free"] == 1.0 and rep["planning"]["solved"] >= 20


def test_query_file_errors_stay_on_one_line(tmp_path, spec):
    """Found by the fuzz test: an unknown key holding a newline was printed raw."""
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "mug", "expected": "red mug", "\\n": 1}\n')
    with pytest.raises(InputFileError) as e:
        load_queries(path, spec.labels[1:])
    assert "\n" not in str(e.value) and "unknown key" in str(e.value)
