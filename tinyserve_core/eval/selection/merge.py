"""Join `tinyserve eval selection --json` results of runs that split one evaluation by
block size (separate processes on one GPU, or separate machines) into one result, as if
it had been one run: the same settings are required of every part, block sizes must not
repeat, and each part is checked field by field before it is trusted."""

from __future__ import annotations

from dataclasses import MISSING, fields

from ...loaders import FileContext, load_json
from .spec import EvalSpec, RunResult

MAX_RESULT_BYTES = 64 << 20
_RESULT_FIELDS = {f.name for f in fields(RunResult)}
_REQUIRED = {f.name for f in fields(RunResult) if f.default is MISSING and f.default_factory is MISSING}


def _spec_of(doc: dict, ctx: FileContext) -> EvalSpec:
    raw = doc.get("spec")
    if not isinstance(raw, dict):
        raise ctx.error("spec", "missing: not a `tinyserve eval selection --json` result")
    known = {f.name for f in fields(EvalSpec)}
    extra = sorted(set(raw) - known)
    if extra:
        raise ctx.error("spec", f"unknown settings {', '.join(extra)}")
    # lists in JSON are tuples in the spec; compare like with like
    try:
        spec = EvalSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        return spec.validate()
    except (TypeError, ValueError) as e:
        raise ctx.error("spec", str(e)) from None


def _results_of(doc: dict, ctx: FileContext) -> list[RunResult]:
    rows = doc.get("results")
    if not isinstance(rows, list) or not rows:
        raise ctx.error("results", "missing or empty")
    out = []
    for i, r in enumerate(rows):
        where = f"results[{i}]"
        if not isinstance(r, dict):
            raise ctx.error(where, f"expected an object, got {type(r).__name__}")
        unknown = sorted(set(r) - _RESULT_FIELDS)
        missing = sorted(_REQUIRED - set(r))
        if unknown or missing:
            raise ctx.error(where, f"unknown fields {unknown}" if unknown else f"missing fields {missing}")
        if not isinstance(r["policy"], str) or not isinstance(r["block_size"], int):
            raise ctx.error(where, "policy must be a string and block_size an integer")
        out.append(RunResult(**r))
    return out


def merge_results(paths: list[str]) -> tuple[EvalSpec, list[RunResult], dict]:
    """(the joint spec, every part's results in block-size order, info of the joint run:
    model, machine, device, dtype, text source, torch, summed wall time)."""
    parts = []
    for path in paths:
        ctx = FileContext(str(path))
        doc = load_json(path, max_bytes=MAX_RESULT_BYTES, field="--merge")
        if not isinstance(doc, dict):
            raise ctx.error("--merge", "expected a JSON object")
        if doc.get("verdict"):  # a quick run's figures are never judged, so never joined into a verdict
            raise ctx.error("verdict", f"{doc['verdict']!r}: a quick run cannot be part of a merged run")
        parts.append((ctx, doc, _spec_of(doc, ctx), _results_of(doc, ctx)))
    ctx0, doc0, spec0, _ = parts[0]
    seen: dict[int, str] = {}
    for ctx, doc, spec, results in parts:
        for key in ("model", "device", "dtype", "text_source", "machine"):
            if doc.get(key) != doc0.get(key):
                raise ctx.error(key, f"{doc.get(key)!r} differs from {ctx0.path}'s {doc0.get(key)!r}")
        for name in (f.name for f in fields(EvalSpec)):
            if name != "block_sizes" and getattr(spec, name) != getattr(spec0, name):
                raise ctx.error(f"spec.{name}", f"{getattr(spec, name)!r} differs from "
                                                f"{ctx0.path}'s {getattr(spec0, name)!r}")
        for bs in spec.block_sizes:
            if bs in seen:
                raise ctx.error("spec.block_sizes", f"block {bs} is also in {seen[bs]}")
            seen[bs] = ctx.path
        stray = {r.block_size for r in results} - set(spec.block_sizes)
        if stray:
            raise ctx.error("results", f"block sizes {sorted(stray)} are not in the file's spec")
    spec0.block_sizes = tuple(sorted(seen))
    results = sorted((r for *_, rs in parts for r in rs), key=lambda r: r.block_size)
    info = {k: doc0.get(k) for k in ("model", "machine", "device", "dtype", "text_source", "torch")}
    # parts may have run side by side: keep each part's time rather than one misleading sum
    info["wall_s"] = max(float(doc.get("wall_s") or 0.0) for _, doc, *_ in parts)
    info["part_wall_s"] = [float(doc.get("wall_s") or 0.0) for _, doc, *_ in parts]
    info["merged_from"] = [str(p) for p in paths]
    return spec0, results, info
