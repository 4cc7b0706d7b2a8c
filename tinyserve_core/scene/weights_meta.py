"""Reading a scene weights file under the loader discipline: a bounded regular file, the
safetensors header and our JSON metadata parsed with the depth and number checks, and
every value the field is rebuilt from checked (types, ranges, tensor shapes, finite
values), each problem one InputFileError `path: field: problem`."""

from __future__ import annotations

import math
import struct

import numpy as np

from ..loaders import MiB, FileContext, decode_utf8, loads_json, read_bytes
from .field import MAX_GRID_CORNERS, GridSpec
from .fields import box_field, number_field
from .spec import MAX_OBJECTS

# The shipped weights are 2-7 MB; the largest grid the trainer accepts keeps far less than this.
MAX_WEIGHTS_BYTES = 512 * MiB
MAX_HEADER_BYTES = 4 * MiB
VOXEL_RANGE = (0.005, 0.2)  # TrainConfig's range, in metres
MAX_WIDTH = 1024  # feature and hidden widths; the trainer uses 8 and 32


def read_weights_file(path: str, fmts: tuple[str, ...]) -> tuple[dict, bytes]:
    """(checked metadata, the file's bytes): size, header and metadata validated; the
    tensors are checked by check_tensors once the grid is known."""
    data = read_bytes(path, max_bytes=MAX_WEIGHTS_BYTES)
    ctx = FileContext(str(path))
    if len(data) < 8:
        raise ctx.error("header", "shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ctx.error("header", f"length {n} is beyond the file or over the limit of {MAX_HEADER_BYTES}")
    header = loads_json(decode_utf8(data[8:8 + n], ctx, "header"), ctx, field="header")
    extra = header.get("__metadata__") if isinstance(header, dict) else None
    raw = extra.get("tinyserve") if isinstance(extra, dict) else None
    if not isinstance(raw, str):
        raise ctx.error("metadata.tinyserve", "missing: not a scene weights file")
    meta = loads_json(raw, ctx, field="metadata.tinyserve")
    return check_meta(meta, ctx, fmts), data


def check_meta(meta, ctx: FileContext, fmts: tuple[str, ...]) -> dict:
    if not isinstance(meta, dict):
        raise ctx.error("metadata.tinyserve", "must be a JSON object")
    if meta.get("format") not in fmts:
        raise ctx.error("metadata.format", f"{str(meta.get('format'))[:40]!r}, expected one of {', '.join(fmts)}")
    labels = meta.get("labels")
    if (not isinstance(labels, list) or not 2 <= len(labels) <= MAX_OBJECTS + 1
            or not all(isinstance(s, str) and s for s in labels)):
        raise ctx.error("metadata.labels", f"must be a list of 2 to {MAX_OBJECTS + 1} non-empty strings")
    g = meta.get("grid")
    lo, hi = box_field(g, ctx, "metadata.grid", "lo", "hi")
    voxel = number_field(g.get("voxel"), ctx, "metadata.grid.voxel", *VOXEL_RANGE)
    grid = GridSpec(lo, hi, voxel)
    if math.prod(grid.shape) > MAX_GRID_CORNERS or min(grid.shape) < 2:
        raise ctx.error("metadata.grid", f"{grid.shape} corners: needs 2 to {MAX_GRID_CORNERS:,} in all")
    for key in ("feat_dim", "hidden"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_WIDTH:
            raise ctx.error(f"metadata.{key}", f"must be an integer in [1, {MAX_WIDTH}], got {repr(v)[:40]}")
    if not isinstance(meta.get("stats", {}), dict):
        raise ctx.error("metadata.stats", "must be an object")
    return {**meta, "grid_spec": grid}


def check_tensors(t: dict[str, np.ndarray], meta: dict, ctx: FileContext, quantised: bool) -> None:
    """Bitmask lengths match the grid, density and features match the kept corners, and
    every stored value is finite (a NaN corner would blank every ray through it).
    `quantised`: features are uint8 codes with per-channel `features_lo` and a positive
    `features_step`."""
    nx, ny, nz = meta["grid_spec"].shape
    sizes = {"keep": nx * ny * nz, "occupancy": (nx - 1) * (ny - 1) * (nz - 1)}
    for name, bits in sizes.items():
        a = t.get(name)
        if a is None or a.dtype != np.uint8 or a.shape != ((bits + 7) // 8,):
            raise ctx.error(name, f"expected {(bits + 7) // 8} packed bytes for the grid's {bits} bits")
    m = int(np.unpackbits(t["keep"])[:sizes["keep"]].sum())
    expect = {"density": (m,), "features": (m, meta["feat_dim"])}
    for name, shape in expect.items():
        a = t.get(name)
        if a is None or a.shape != shape:
            raise ctx.error(name, f"expected shape {shape} for {m} kept corners, got {None if a is None else a.shape}")
    if quantised:
        if t["features"].dtype != np.uint8:
            raise ctx.error("features", f"expected uint8 codes, got {t['features'].dtype}")
        for name in ("features_lo", "features_step"):
            a = t.get(name)
            if a is None or a.dtype != np.float32 or a.shape != (meta["feat_dim"],):
                raise ctx.error(name, f"expected float32 of shape ({meta['feat_dim']},), got "
                                      f"{None if a is None else f'{a.dtype} {a.shape}'}")
    for name, a in t.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ctx.error(name, "holds NaN or infinite values")
    if quantised and not (t["features_step"] > 0).all():
        raise ctx.error("features_step", "must be positive")
