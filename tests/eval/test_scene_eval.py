"""`tinyserve_core.eval.scene`: the query files it reads and the full evaluation's targets."""

import pytest

from tinyserve_core.errors import InputFileError
from tinyserve_core.eval.scene import answer_correct, default_queries, load_queries, shipped_query_files


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
    assert rep["queries"]["accuracy"] >= 0.9 and all(s["accuracy"] >= 0.9 for s in rep["queries"]["sets"])
    ground = [p for p in rep["planning"]["rows"] if p["robot"] == "ground" and p["status"] == "solved"]
    assert ground and all(len(p["goal"]) == 2 and p["approach_distance"] <= 0.6 for p in ground)
    assert rep["planning"]["collision_free"] == 1.0 and rep["planning"]["solved"] >= 20


def test_query_file_errors_stay_on_one_line(tmp_path, spec):
    """Found by the fuzz test: an unknown key holding a newline was printed raw."""
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "mug", "expected": "red mug", "\\n": 1}\n')
    with pytest.raises(InputFileError) as e:
        load_queries(path, spec.labels[1:])
    assert "\n" not in str(e.value) and "unknown key" in str(e.value)


def test_shipped_sets_cover_every_category(spec):
    files = {f.name: load_queries(f, spec.labels[1:]) for f in shipped_query_files("room")}
    assert list(files)[0] == "room.queries.jsonl"
    own, held = files["room.queries.own.jsonl"], files["room.queries.heldout.jsonl"]
    cats = {"paraphrase", "synonym", "function", "attribute", "position", "typo", "absent", "ambiguous"}
    assert len(own) >= 150 and {q["category"] for q in own} == cats
    assert len(held) >= 60 and {q["category"] for q in held} == cats
    assert not {q["query"].lower() for q in own} & {q["query"].lower() for q in held}
    assert all("candidates" in q for qs in files.values() for q in qs if q["expected"] == "ambiguous")


@pytest.mark.parametrize("line, problem", [
    ('{"query": "x", "expected": "red mug", "candidates": ["red mug", "table"]}', "only an 'ambiguous'"),
    ('{"query": "x", "expected": "ambiguous", "candidates": ["red mug"]}', "2 or more"),
    ('{"query": "x", "expected": "ambiguous", "candidates": ["red mug", "unicorn"]}', "not an object label"),
    ('{"query": "x", "expected": "ambiguous", "candidates": ["table", "table"]}', "twice"),
    ('{"query": "x", "expected": "table", "category": 3}', "short string"),
])
def test_bad_candidates_and_categories_name_the_field(tmp_path, spec, line, problem):
    path = tmp_path / "q.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputFileError) as e:
        load_queries(path, spec.labels[1:])
    assert problem in str(e.value)


class _Answer:
    def __init__(self, status, labels):
        from types import SimpleNamespace

        self.status = status
        self.candidates = [SimpleNamespace(label=x) for x in labels]
        self.label = labels[0] if status == "found" else status


def test_an_ambiguous_answer_counts_only_with_the_right_set():
    row = {"query": "a box", "expected": "ambiguous", "candidates": ["blue box", "brown box"]}
    assert answer_correct(row, _Answer("ambiguous", ["brown box", "blue box"])) == (True, True)
    assert answer_correct(row, _Answer("ambiguous", ["blue box", "trash bin"])) == (False, True)
    assert answer_correct(row, _Answer("ambiguous", ["blue box", "brown box", "table"]))[0] is False
    assert answer_correct({"expected": "ambiguous"}, _Answer("ambiguous", ["a", "b"])) == (True, False)
    assert answer_correct({"expected": "table"}, _Answer("found", ["table"])) == (True, False)
    assert answer_correct({"expected": "table"}, _Answer("found", ["chair"]))[0] is False
