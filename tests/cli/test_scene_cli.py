"""`tinyserve eval scene` and `tinyserve train-scene` as people run them."""

import json

from tinyserve_core.cli import main


def test_eval_cli_rejects_a_bad_query_file(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "mug"}\n')
    assert main(["eval", "scene", "--queries", str(path)]) == 2
    assert "q.jsonl:1" in capsys.readouterr().err


def test_train_scene_cli_writes_loadable_weights(tmp_path, capsys):
    from tinyserve_core.scene.weights import load_weights

    out = tmp_path / "w.safetensors"
    summary = tmp_path / "s.json"
    assert main(["train-scene", "--iters", "4", "--size", "16", "--batch-rays", "256", "--voxel", "0.1",
                 "--out", str(out), "--json", str(summary)]) == 0
    field, occ, meta = load_weights(out)
    assert meta["stats"]["steps"] == 4 and "heldout_psnr" in json.loads(summary.read_text())
    assert main(["train-scene", "--scene", "nowhere"]) == 2
    assert "available: apartment, room" in capsys.readouterr().err


def test_scene_commands_take_the_apartment(tmp_path, capsys):
    """--scene reaches each command: train-scene trains the apartment's 28 labels, and eval
    scene checks a query file against the apartment's labels (a room label is refused)."""
    from tinyserve_core.scene.spec import load_scene
    from tinyserve_core.scene.weights import load_weights

    out = tmp_path / "w.safetensors"
    assert main(["train-scene", "--scene", "apartment", "--iters", "2", "--size", "16", "--batch-rays", "128",
                 "--voxel", "0.1", "--out", str(out)]) == 0
    assert load_weights(out)[2]["labels"] == load_scene("apartment").labels
    q = tmp_path / "q.jsonl"
    q.write_text('{"query": "the mug", "expected": "red mug"}\n')
    assert main(["eval", "scene", "--scene", "apartment", "--queries", str(q)]) == 2
    assert "q.jsonl:1: expected:" in capsys.readouterr().err


def _room_with(tmp_path, mutate, name="bad.json"):
    from tinyserve_core.scene.spec import load_scene

    d = json.loads(open(load_scene().path).read())
    mutate(d)
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return path


def _one_line_error(capsys, *parts):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for p in parts:
        assert p in err, err
    return err


def test_train_scene_refuses_non_finite_values_naming_the_field(tmp_path, capsys):
    path = _room_with(tmp_path, lambda d: d["objects"][3]["primitives"][0].__setitem__("size", [0.4, 1e300, 0.4]))
    assert main(["train-scene", "--scene", str(path), "--iters", "1", "--out", str(tmp_path / "w")]) == 2
    _one_line_error(capsys, f"{path}: objects[3].primitives[0].size[1]: ", "out of range")
    text = path.read_text().replace('"distance": 3.6', '"distance": NaN')
    path.write_text(text)
    assert main(["train-scene", "--scene", str(path), "--iters", "1", "--out", str(tmp_path / "w")]) == 2
    _one_line_error(capsys, str(path), "NaN is not a number JSON allows")


def test_train_scene_refuses_a_grid_that_cannot_fit(tmp_path, capsys):
    def huge(d):
        d["bounds"] = {"min": [-900, -900, -900], "max": [900, 900, 900]}
    path = _room_with(tmp_path, huge)
    assert main(["train-scene", "--scene", str(path), "--iters", "1", "--size", "8",
                 "--out", str(tmp_path / "w")]) == 2
    _one_line_error(capsys, "voxel: ", "over the limit of")
    assert not (tmp_path / "w").exists()


def test_train_scene_refuses_a_directory_and_non_utf8(tmp_path, capsys):
    folder = tmp_path / "dir.json"
    folder.mkdir()
    assert main(["train-scene", "--scene", str(folder), "--iters", "1"]) == 2
    _one_line_error(capsys, str(folder), "is a directory")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"objects": "caf\xe9"}')
    assert main(["train-scene", "--scene", str(latin), "--iters", "1"]) == 2
    _one_line_error(capsys, f"{latin}:1: file: not UTF-8")


def test_eval_scene_refuses_bad_query_files_before_loading_the_lab(tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text('{"query": "mug", "expected": "red mug"}\n{"query": "a box", "expected": ["blue box", "brown box"]}\n')
    assert main(["eval", "scene", "--queries", str(q), "--weights", str(tmp_path / "none")]) == 2
    _one_line_error(capsys, f"{q}:2: expected: ", "ambiguous")
    assert main(["eval", "scene", "--queries", str(tmp_path), "--weights", str(tmp_path / "none")]) == 2
    _one_line_error(capsys, str(tmp_path), "is a directory")
    q.write_bytes(b'{"query": "caf\xe9", "expected": "red mug"}\n')
    assert main(["eval", "scene", "--queries", str(q)]) == 2
    _one_line_error(capsys, f"{q}:1: file: not UTF-8")


def test_train_scene_weights_follow_the_umask(tmp_path):
    """Weights are shared files: 0666 & ~umask, not the 0600 of a private temp file."""
    import os
    import stat

    out = tmp_path / "w.safetensors"
    old = os.umask(0o022)
    try:
        assert main(["train-scene", "--iters", "2", "--size", "16", "--batch-rays", "128", "--voxel", "0.1",
                     "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_train_scene_checks_its_outputs_before_training(tmp_path, capsys):
    """A bad --out or --json is one line before any training step, not after minutes."""
    for flag in ("--out", "--json"):
        argv = ["train-scene", "--iters", "5000", "--size", "16", "--out", str(tmp_path / "w.safetensors"),
                flag, str(tmp_path)]   # a directory: refused for both outputs
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is a directory" in err and "Traceback" not in err and "train-scene room" not in err
    assert not (tmp_path / "w.safetensors").exists()
