import json

import pytest

from tinyserve_core.errors import ConfigError, InputFileError
from tinyserve_core.scene.spec import BACKGROUND, available_scenes, load_scene


def test_default_scene_has_ten_labelled_objects_from_all_primitives():
    spec = load_scene()
    assert len(spec.objects) >= 10
    assert spec.labels[0] == BACKGROUND and len(set(spec.labels)) == len(spec.labels)
    kinds = {p.kind for o in spec.objects for p in o.primitives}
    assert kinds == {"box", "sphere", "cylinder", "cone"}
    assert all(o.description for o in spec.objects)
    assert "room" in available_scenes()


def test_unknown_scene_lists_the_available_ones():
    with pytest.raises(ConfigError) as e:
        load_scene("kitchen-of-dreams")
    assert e.value.field == "scene" and "room" in str(e.value)


def _scene_dict():
    with open(load_scene().path) as f:
        return json.load(f)


def test_malformed_json_names_the_line(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "objects": [\n    {"label": "x",, }\n  ]\n}\n')
    with pytest.raises(InputFileError) as e:
        load_scene(bad)
    assert e.value.line == 3 and "broken.json:3" in str(e.value)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["objects"][8]["primitives"][0].pop("radius"), "objects[8].primitives[0].radius"),
    (lambda d: d["objects"][0]["primitives"][0].__setitem__("color", [2, 0, 0]), "objects[0].primitives[0].color[0]"),
    (lambda d: d["objects"][1]["primitives"][0].__setitem__("type", "torus"), "objects[1].primitives[0].type"),
    (lambda d: d["objects"][2].__setitem__("label", "floor"), "objects[2].label"),
    (lambda d: d["bounds"].__setitem__("max", [1, 1]), "bounds.max"),
])
def test_invalid_fields_are_named(tmp_path, mutate, field):
    d = _scene_dict()
    mutate(d)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d))
    with pytest.raises(InputFileError) as e:
        load_scene(path)
    assert str(e.value).startswith(f"{path}: {field}: ")
