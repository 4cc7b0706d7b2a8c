"""Scene weights files read under the loader discipline: the metadata and tensors a field
is rebuilt from are checked, every problem one error naming the file and the field."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tinyserve_core.errors import InputFileError, TinyServeError
from tinyserve_core.scene.weights import load_weights


@pytest.fixture(scope="module")
def shipped():
    from tinyserve_core.scene.spec import load_scene
    from tinyserve_core.scene.weights import weights_path

    path = weights_path(load_scene("room"))
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["tinyserve"])
    return load_file(str(path)), meta


def _write(tmp_path, tensors, meta, raw_meta=None):
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path), metadata={"tinyserve": raw_meta if raw_meta is not None else json.dumps(meta)})
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda t, m: m.__setitem__("labels", [["floor"], "x"]), "metadata.labels"),
    (lambda t, m: m.pop("labels"), "metadata.labels"),
    (lambda t, m: m["grid"].__setitem__("voxel", "fine"), "metadata.grid.voxel"),
    (lambda t, m: m["grid"].__setitem__("voxel", 1e-9), "metadata.grid.voxel"),
    (lambda t, m: m["grid"]["lo"].__setitem__(1, 1e300), "metadata.grid.lo[1]"),
    (lambda t, m: m.__setitem__("grid", [1, 2]), "metadata.grid"),
    (lambda t, m: m.__setitem__("feat_dim", "8"), "metadata.feat_dim"),
    (lambda t, m: m.__setitem__("hidden", 10**9), "metadata.hidden"),
    (lambda t, m: m.__setitem__("format", ["x"]), "metadata.format"),
    (lambda t, m: t.__setitem__("density", t["density"][:-1]), "density"),
    (lambda t, m: t.__setitem__("keep", t["keep"][:10]), "keep"),
    (lambda t, m: t["features_step"].__setitem__(0, np.nan), "features_step"),
    (lambda t, m: t["features_step"].__setitem__(0, 0.0), "features_step"),
    (lambda t, m: t.pop("features_lo"), "features_lo"),
    (lambda t, m: t.__setitem__("features", t["features"].astype(np.float16)), "features"),
    (lambda t, m: t.pop("mlp.0.weight"), "mlp"),
    (lambda t, m: t.__setitem__("mlp.0.weight", np.zeros((3, 3), np.float32)), "mlp"),
])
def test_bad_metadata_and_tensors_name_the_field(tmp_path, shipped, mutate, field):
    tensors, meta = shipped
    tensors = {k: v.copy() for k, v in tensors.items()}
    meta = json.loads(json.dumps(meta))
    mutate(tensors, meta)
    path = _write(tmp_path, tensors, meta)
    with pytest.raises(InputFileError) as e:
        load_weights(path)
    assert str(e.value).startswith(f"{path}: {field}"), str(e.value)


@pytest.mark.parametrize("raw, problem", [
    ("not json", "invalid JSON"),
    ('{"format": NaN}', "not a number JSON allows"),
    ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    ("[1, 2]", "must be a JSON object"),
])
def test_hostile_metadata_text(tmp_path, shipped, raw, problem):
    path = _write(tmp_path, shipped[0], None, raw_meta=raw)
    with pytest.raises(InputFileError, match=problem):
        load_weights(path)


def test_directory_and_roundtrip_of_the_shipped_file(tmp_path, shipped):
    folder = tmp_path / "d.safetensors"
    folder.mkdir()
    with pytest.raises(InputFileError, match="is a directory"):
        load_weights(folder)
    path = _write(tmp_path, *shipped)
    field, occ, meta = load_weights(path)
    assert meta["labels"] == shipped[1]["labels"] and occ.any()


def test_format_1_fp16_features_still_load(tmp_path, shipped):
    """Weights written before the uint8 features (format /1, fp16 features) still load:
    the shipped file re-encoded as /1 gives the same field as the /2 file, to fp16."""
    tensors, meta = shipped
    assert tensors["features"].dtype == np.uint8 and meta["format"] == "tinyserve-semantic-grid/2"
    feats = tensors["features"].astype(np.float32) * tensors["features_step"] + tensors["features_lo"]
    old = {k: v for k, v in tensors.items() if not k.startswith("features")}
    old["features"] = feats.astype(np.float16)
    old_field, old_occ, _ = load_weights(_write(tmp_path, old, {**meta, "format": "tinyserve-semantic-grid/1"}))
    new_field, new_occ, _ = load_weights(_write(tmp_path, *shipped))
    assert old_occ.equal(new_occ)
    assert np.allclose(old_field.features.detach().numpy(), new_field.features.detach().numpy(), atol=1e-2)
    assert old_field.density.detach().equal(new_field.density.detach())
