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
    assert "available: room" in capsys.readouterr().err


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
