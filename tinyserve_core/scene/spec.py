"""Scene specs: labelled objects built from primitives, loaded from the shipped
assets/scenes/<name>.json.

World frame is z-up, metres. Boxes are axis-aligned; cylinders and cones stand on their
base along +z (a cone's apex is at the top). Every primitive of an object shares the
object's label, so "table" is one class whether it has one box or five.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, InputFileError
from ..resources import asset_path

SCENES_DIR = asset_path("scenes")
DEFAULT_SCENE = "room"
BACKGROUND = "background"

PRIMITIVE_KEYS = {
    "box": ("center", "size"),
    "sphere": ("center", "radius"),
    "cylinder": ("base", "radius", "height"),
    "cone": ("base", "radius", "height"),
}


@dataclass(frozen=True)
class Primitive:
    kind: str
    color: tuple[float, float, float]
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)  # box, sphere
    size: tuple[float, float, float] = (0.0, 0.0, 0.0)  # box full extents
    base: tuple[float, float, float] = (0.0, 0.0, 0.0)  # cylinder, cone: centre of the base disc
    radius: float = 0.0
    height: float = 0.0

    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.kind == "box":
            lo = tuple(c - s / 2 for c, s in zip(self.center, self.size))
            hi = tuple(c + s / 2 for c, s in zip(self.center, self.size))
        elif self.kind == "sphere":
            lo = tuple(c - self.radius for c in self.center)
            hi = tuple(c + self.radius for c in self.center)
        else:
            bx, by, bz = self.base
            lo = (bx - self.radius, by - self.radius, bz)
            hi = (bx + self.radius, by + self.radius, bz + self.height)
        return lo, hi


@dataclass(frozen=True)
class SceneObject:
    label: str
    description: str
    primitives: tuple[Primitive, ...]

    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        los, his = zip(*(p.bounds() for p in self.primitives))
        return tuple(map(min, zip(*los))), tuple(map(max, zip(*his)))


@dataclass(frozen=True)
class SceneSpec:
    name: str
    objects: tuple[SceneObject, ...]
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]]  # NeRF/planning box
    camera_target: tuple[float, float, float]
    camera_distance: float
    floor_label: str = "floor"
    light_dir: tuple[float, float, float] = (0.4, 0.3, 0.85)
    ambient: float = 0.35
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    path: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def labels(self) -> list[str]:
        """Class names: index 0 is the background (rays that hit nothing)."""
        return [BACKGROUND] + [o.label for o in self.objects]

    def object(self, label: str) -> SceneObject:
        for o in self.objects:
            if o.label == label:
                return o
        raise ConfigError("label", f"no object {label!r} in scene {self.name!r}; have {', '.join(o.label for o in self.objects)}")


def available_scenes(directory: Path = SCENES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def scene_path(name_or_path: str | Path) -> Path:
    """A scene name under the shipped assets/scenes, or a path to a .json file."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return p
    candidate = SCENES_DIR / f"{name_or_path}.json"
    if candidate.exists():
        return candidate
    have = ", ".join(available_scenes()) or "none"
    raise ConfigError("scene", f"unknown scene {str(name_or_path)!r}; available: {have}")


def load_scene(name_or_path: str | Path = DEFAULT_SCENE) -> SceneSpec:
    path = scene_path(name_or_path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputFileError(str(path), e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    return parse_scene(data, name=path.stem, path=str(path))


def _vec(value, where: str, n: int = 3, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(where, f"expected a list of {n} numbers, got {value!r}")
    if positive and any(v <= 0 for v in value):
        raise ConfigError(where, f"every entry must be > 0, got {value!r}")
    return tuple(float(v) for v in value)


def _pos(value, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(where, f"expected a number > 0, got {value!r}")
    return float(value)


def _color(value, where: str) -> tuple[float, float, float]:
    c = _vec(value, where)
    if any(v < 0 or v > 1 for v in c):
        raise ConfigError(where, f"colour components must lie in [0, 1], got {value!r}")
    return c


def _primitive(d, where: str) -> Primitive:
    if not isinstance(d, dict):
        raise ConfigError(where, "expected an object")
    kind = d.get("type")
    if kind not in PRIMITIVE_KEYS:
        raise ConfigError(f"{where}.type", f"must be one of {', '.join(PRIMITIVE_KEYS)}, got {kind!r}")
    allowed = set(PRIMITIVE_KEYS[kind]) | {"type", "color"}
    for key in d:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}", f"unknown key for a {kind}; allowed: {', '.join(sorted(allowed))}")
    for key in PRIMITIVE_KEYS[kind] + ("color",):
        if key not in d:
            raise ConfigError(f"{where}.{key}", f"missing (a {kind} needs {', '.join(PRIMITIVE_KEYS[kind])}, color)")
    kw = {"kind": kind, "color": _color(d["color"], f"{where}.color")}
    for key in PRIMITIVE_KEYS[kind]:
        if key in ("center", "base"):
            kw[key] = _vec(d[key], f"{where}.{key}")
        elif key == "size":
            kw[key] = _vec(d[key], f"{where}.{key}", positive=True)
        else:
            kw[key] = _pos(d[key], f"{where}.{key}")
    return Primitive(**kw)


def parse_scene(data, name: str = "scene", path: str = "") -> SceneSpec:
    if not isinstance(data, dict):
        raise ConfigError("scene", "the top level must be a JSON object")
    objs = data.get("objects")
    if not isinstance(objs, list) or not objs:
        raise ConfigError("objects", "must be a non-empty list of objects")
    objects, seen = [], set()
    for i, o in enumerate(objs):
        where = f"objects[{i}]"
        if not isinstance(o, dict):
            raise ConfigError(where, "expected an object")
        label = o.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"{where}.label", "must be a non-empty string")
        if label == BACKGROUND or label in seen:
            raise ConfigError(f"{where}.label", f"{label!r} is reserved or already used")
        seen.add(label)
        desc = o.get("description")
        if not isinstance(desc, str) or not desc.strip():
            raise ConfigError(f"{where}.description", "must be a non-empty string")
        prims = o.get("primitives")
        if not isinstance(prims, list) or not prims:
            raise ConfigError(f"{where}.primitives", "must be a non-empty list")
        objects.append(SceneObject(label, desc, tuple(_primitive(p, f"{where}.primitives[{j}]") for j, p in enumerate(prims))))
    b = data.get("bounds")
    if not isinstance(b, dict):
        raise ConfigError("bounds", "must be an object with min and max")
    lo, hi = _vec(b.get("min"), "bounds.min"), _vec(b.get("max"), "bounds.max")
    if any(h <= l for l, h in zip(lo, hi)):
        raise ConfigError("bounds", f"max must exceed min on every axis, got {lo} .. {hi}")
    cam = data.get("camera", {})
    if not isinstance(cam, dict):
        raise ConfigError("camera", "must be an object")
    target = _vec(cam.get("target", [(l + h) / 2 for l, h in zip(lo, hi)]), "camera.target")
    distance = _pos(cam.get("distance", 3.5), "camera.distance")
    floor = data.get("floor_label", "floor")
    if floor not in seen:
        raise ConfigError("floor_label", f"{floor!r} is not an object label")
    kw = {}
    if "light_dir" in data:
        kw["light_dir"] = _vec(data["light_dir"], "light_dir")
    if "ambient" in data:
        a = data["ambient"]
        if not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise ConfigError("ambient", f"must be a number in [0, 1], got {a!r}")
        kw["ambient"] = float(a)
    if "background" in data:
        kw["background"] = _color(data["background"], "background")
    return SceneSpec(name=name, objects=tuple(objects), bounds=(lo, hi), camera_target=target,
                     camera_distance=distance, floor_label=floor, path=path, **kw)
