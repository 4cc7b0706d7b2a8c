"""Scene specs: labelled objects built from primitives, loaded from the shipped
assets/scenes/<name>.json.

World frame is z-up, metres. Boxes are axis-aligned; cylinders and cones stand on their
base along +z (a cone's apex is at the top). Every primitive of an object shares the
object's label, so "table" is one class whether it has one box or five.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..loaders import MiB, FileContext, load_json
from ..resources import asset_path
from .fields import MAX_COORD, box_field, number_field, show as _show, vec3_field  # noqa: F401  (re-exported)
from .layout import Layout, parse_layout

SCENES_DIR = asset_path("scenes")
DEFAULT_SCENE = "room"
BACKGROUND = "background"

# The room spec is 8 kB; a megabyte is a scene of thousands of primitives.
MAX_SCENE_BYTES = MiB
MAX_OBJECTS = 255  # each is a class of the semantic head and three embedded texts: far beyond a room
MAX_TEXT_CHARS = 1000  # labels and descriptions are embedded as short sentences

# Every key a spec may hold: a misspelt one ("colours", "floorlabel") is an error, not ignored.
SCENE_KEYS = ("description", "bounds", "camera", "floor_label", "light_dir", "ambient", "background", "objects",
              "rooms", "doorways", "planning")
OBJECT_KEYS = ("label", "description", "primitives", "aliases", "function", "colors", "materials", "size",
               "structure")

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


SIZE_CLASSES = ("small", "medium", "large")
# Optional words that describe an object to a person: the query scorer embeds aliases and
# functions beside the label and description, and the attribute words filter candidates.
WORD_FIELDS = ("aliases", "function", "colors", "materials")
MAX_WORDS = 32  # per field: a handful of synonyms, never a thesaurus


@dataclass(frozen=True)
class SceneObject:
    label: str
    description: str
    primitives: tuple[Primitive, ...]
    aliases: tuple[str, ...] = ()  # other names: "cup", "coffee cup"
    function: tuple[str, ...] = ()  # what it is for: "drinking coffee or tea"
    colors: tuple[str, ...] = ()  # colour names a person would use; empty: named from the primitives' RGB
    materials: tuple[str, ...] = ()
    size: str = ""  # "small" | "medium" | "large"; empty: from the geometry
    structure: bool = False  # part of the room (floor, walls): never a generic answer ("something")

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
    layout: Layout = field(default_factory=Layout)  # rooms, doorways, planning starts and targets

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
    data = load_json(path, max_bytes=MAX_SCENE_BYTES)
    return parse_scene(data, name=path.stem, path=str(path))


def _length(value, ctx: FileContext, where: str) -> float:
    return number_field(value, ctx, where, 0.0, 2 * MAX_COORD, open_lo=True)


def _text(value, ctx: FileContext, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(where, f"must be a non-empty string, got {_show(value)}")
    if len(value) > MAX_TEXT_CHARS:
        raise ctx.error(where, f"{len(value)} characters is over the limit of {MAX_TEXT_CHARS}")
    return value


def _primitive(d, ctx: FileContext, where: str) -> Primitive:
    if not isinstance(d, dict):
        raise ctx.error(where, "expected an object")
    kind = d.get("type")
    if not isinstance(kind, str) or kind not in PRIMITIVE_KEYS:
        raise ctx.error(f"{where}.type", f"must be one of {', '.join(PRIMITIVE_KEYS)}, got {_show(kind)}")
    allowed = set(PRIMITIVE_KEYS[kind]) | {"type", "color"}
    for key in d:
        if key not in allowed:
            raise ctx.error(f"{where}.{_show(key)[1:-1]}", f"unknown key for a {kind}; allowed: {', '.join(sorted(allowed))}")
    for key in PRIMITIVE_KEYS[kind] + ("color",):
        if key not in d:
            raise ctx.error(f"{where}.{key}", f"missing (a {kind} needs {', '.join(PRIMITIVE_KEYS[kind])}, color)")
    kw = {"kind": kind, "color": vec3_field(d["color"], ctx, f"{where}.color", 0.0, 1.0)}
    for key in PRIMITIVE_KEYS[kind]:
        if key in ("center", "base"):
            kw[key] = vec3_field(d[key], ctx, f"{where}.{key}")
        elif key == "size":
            kw[key] = vec3_field(d[key], ctx, f"{where}.{key}", 0.0, 2 * MAX_COORD, open_lo=True)
        else:
            kw[key] = _length(d[key], ctx, f"{where}.{key}")
    return Primitive(**kw)


def _object(o, ctx: FileContext, where: str, seen: set[str]) -> SceneObject:
    if not isinstance(o, dict):
        raise ctx.error(where, "expected an object")
    for key in o:
        if key not in OBJECT_KEYS:
            raise ctx.error(f"{where}.{_show(key)[1:-1]}", f"unknown key; an object has {', '.join(OBJECT_KEYS)}")
    label = _text(o.get("label"), ctx, f"{where}.label")
    if label == BACKGROUND or label in seen:
        raise ctx.error(f"{where}.label", f"{_show(label)} is reserved or already used")
    seen.add(label)
    desc = _text(o.get("description"), ctx, f"{where}.description")
    prims = o.get("primitives")
    if not isinstance(prims, list) or not prims:
        raise ctx.error(f"{where}.primitives", "must be a non-empty list")
    kw = {key: _words(o[key], ctx, f"{where}.{key}") for key in WORD_FIELDS if key in o}
    if "size" in o and o["size"] not in SIZE_CLASSES:
        raise ctx.error(f"{where}.size", f"must be one of {', '.join(SIZE_CLASSES)}, got {_show(o['size'])}")
    if "structure" in o and not isinstance(o["structure"], bool):
        raise ctx.error(f"{where}.structure", f"must be true or false, got {_show(o['structure'])}")
    return SceneObject(label, desc, tuple(_primitive(p, ctx, f"{where}.primitives[{j}]") for j, p in enumerate(prims)),
                       size=o.get("size", ""), structure=o.get("structure", False), **kw)


def _words(value, ctx: FileContext, where: str) -> tuple[str, ...]:
    """A string or a list of strings (a scene author writes `"colors": "red"` as often as a list)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ctx.error(where, f"must be a string or a non-empty list of strings, got {_show(value)}")
    if len(items) > MAX_WORDS:
        raise ctx.error(where, f"{len(items)} entries is over the limit of {MAX_WORDS}")
    return tuple(_text(v, ctx, f"{where}[{i}]").strip().lower() for i, v in enumerate(items))


def parse_scene(data, name: str = "scene", path: str = "") -> SceneSpec:
    """A SceneSpec from decoded JSON; every problem is an InputFileError naming `path`
    and the field (`objects[3].primitives[0].size[1]`)."""
    ctx = FileContext(path or f"<scene {name}>")
    if not isinstance(data, dict):
        raise ctx.error("scene", "the top level must be a JSON object")
    for key in data:
        if key not in SCENE_KEYS:
            raise ctx.error(_show(key)[1:-1], f"unknown key; a scene has {', '.join(SCENE_KEYS)}")
    objs = data.get("objects")
    if not isinstance(objs, list) or not objs:
        raise ctx.error("objects", "must be a non-empty list of objects")
    if len(objs) > MAX_OBJECTS:
        raise ctx.error("objects", f"{len(objs)} objects is over the limit of {MAX_OBJECTS}")
    seen: set[str] = set()
    objects = [_object(o, ctx, f"objects[{i}]", seen) for i, o in enumerate(objs)]
    lo, hi = box_field(data.get("bounds"), ctx, "bounds", "min", "max")
    cam = data.get("camera", {})
    if not isinstance(cam, dict):
        raise ctx.error("camera", f"must be an object, got {_show(cam)}")
    target = vec3_field(cam.get("target", [(l + h) / 2 for l, h in zip(lo, hi)]), ctx, "camera.target")
    distance = _length(cam.get("distance", 3.5), ctx, "camera.distance")
    floor = data.get("floor_label", "floor")
    if not isinstance(floor, str):
        raise ctx.error("floor_label", f"must be a string naming an object, got {_show(floor)}")
    if floor not in seen:
        raise ctx.error("floor_label", f"{_show(floor)} is not an object label")
    # the floor is structure whether or not the file says so: "the X on the floor" needs it
    objects = [o if o.label != floor else dataclasses.replace(o, structure=True) for o in objects]
    kw = {}
    if "light_dir" in data:
        kw["light_dir"] = vec3_field(data["light_dir"], ctx, "light_dir", -1e3, 1e3)
        if math.hypot(*kw["light_dir"]) < 1e-6:  # normalised for shading: a zero vector gives NaN
            raise ctx.error("light_dir", f"must not be the zero vector, got {data['light_dir']!r}")
    if "ambient" in data:
        kw["ambient"] = number_field(data["ambient"], ctx, "ambient", 0.0, 1.0)
    if "background" in data:
        kw["background"] = vec3_field(data["background"], ctx, "background", 0.0, 1.0)
    layout = parse_layout(data, ctx, (lo, hi), objects, floor, _words, _text)
    return SceneSpec(name=name, objects=tuple(objects), bounds=(lo, hi), camera_target=target,
                     camera_distance=distance, floor_label=floor, path=path, layout=layout, **kw)
