"""The per-device launch policy of the CUDA kernels: one row per GPU in csrc/tuning.json.

A row holds the launch choices that depend on the machine:
  split_min_tiles, split_cost, max_splits   paged decode's flash-decoding split plan
  score_max_ppc, score_min_ctas_per_sm      pages per CTA of page_scores' FMA kernel (float32,
                                            a misaligned query, groups over 8)
  decode_l2_prefetch                        1: paged decode's K/V copies carry the L2::256B
                                            prefetch hint (an H200 streams 7% slower with it)
  sparse_fused_max_batch                    query-aware sparse decode runs as one launch up to
                                            this batch size (0: never), as three above it
  decode_merge_max_splits                   paged decode's split partials are merged by each
                                            row's last CTA in the decode launch up to this
                                            many splits, by a second kernel above (0: never in
                                            the launch)
Rows are keyed by device name and SM count (a cut-down part with the same name but fewer
SMs gets the name-only match, then the default). tools/gpu_tune.py measures the candidate
plans on the GPU it runs on and writes that GPU's row; _backend.build() applies the row of
the current device once the extension is loaded, and `tinyserve bench kernels` prints it."""

from __future__ import annotations

from typing import Any

from ..loaders import FileContext, MiB, load_json
from ..resources import csrc_dir

TABLE_PATH = csrc_dir() / "tuning.json"
# name: (type, lowest, highest); the order is set_tuning's argument order
PARAMS: dict[str, tuple[type, float, float]] = {
    "split_min_tiles": (int, 1, 4096),
    "split_cost": (float, 0.0, 1.0),
    "max_splits": (int, 1, 4096),
    "score_max_ppc": (int, 16, 4096),
    "score_min_ctas_per_sm": (float, 0.0, 64.0),
    "decode_l2_prefetch": (int, 0, 1),
    "sparse_fused_max_batch": (int, 0, 256),
    "decode_merge_max_splits": (int, 0, 4096),
}

_applied: dict[str, Any] = {}


def load_table(path=TABLE_PATH) -> list[dict]:
    """The table's rows, each checked: a `default` row and rows with `name` and `sms`."""
    doc = load_json(path, max_bytes=MiB, field="tuning table")
    ctx = FileContext(str(path))
    rows = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ctx.error("devices", "must be a non-empty list of rows")
    for i, row in enumerate(rows):
        where = f"devices[{i}]"
        if not isinstance(row, dict):
            raise ctx.error(where, "must be an object")
        if row.get("name") != "default" and not (isinstance(row.get("name"), str)
                                                 and isinstance(row.get("sms"), int)):
            raise ctx.error(where, "needs a device `name` and an integer `sms` (or name 'default')")
        for key, (kind, lo, hi) in PARAMS.items():
            v = row.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
                raise ctx.error(f"{where}.{key}", f"must be {kind.__name__}, got {v!r}")
            if not lo <= v <= hi:
                raise ctx.error(f"{where}.{key}", f"{v} is outside [{lo}, {hi}]")
    if not any(r["name"] == "default" for r in rows):
        raise ctx.error("devices", "has no 'default' row")
    return rows


def row_for(rows: list[dict], name: str, sms: int) -> dict:
    """The row of this device: name and SM count, else the name alone, else the default."""
    for match in (lambda r: r["name"] == name and r.get("sms") == sms,
                  lambda r: r["name"] == name,
                  lambda r: r["name"] == "default"):
        for r in rows:
            if match(r):
                return r
    raise AssertionError("load_table guarantees a default row")


def args_of(row: dict) -> list:
    """set_tuning's arguments, in its order."""
    return [PARAMS[k][0](row[k]) for k in PARAMS]


def apply(ext, rows: list[dict] | None = None) -> dict:
    """Looks up the current GPU's row and hands it to the extension; returns the row (empty
    without a GPU: a compile check with TINYSERVE_CUDA_ARCH keeps the built-in defaults)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    row = row_for(load_table() if rows is None else rows, props.name, props.multi_processor_count)
    ext.set_tuning(*args_of(row))
    _applied.clear()
    _applied.update(row, device=props.name, device_sms=props.multi_processor_count)
    return dict(_applied)


def applied() -> dict:
    """The row in force (with the device it was chosen for); empty before the build."""
    return dict(_applied)


def describe(row: dict) -> str:
    """One line for tables and logs."""
    which = row["name"] if row["name"] == "default" else f"{row['name']} / {row['sms']} SMs"
    # a report written before a parameter existed lacks its key
    params = ", ".join(f"{k} {row[k]}" for k in PARAMS if k in row)
    src = f" ({row['source']})" if row.get("source") else ""
    return f"tuning row {which}: {params}{src}"
