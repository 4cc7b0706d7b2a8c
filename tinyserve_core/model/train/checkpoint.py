"""Training checkpoints for `train-lm --resume`: a folder holding a safetensors file
(model and optimizer tensors) and a JSON state (step, clock, history, RNG states,
optimizer hyperparameters, the run's shape). Nothing is ever unpickled: a pickle can
run any code when loaded, so a `.pt` file, or anything else that is not this pair, is
refused with a message naming the path.

The tensors are written first, then the JSON, each through a temporary file and an
atomic rename; both carry the step, and a pair whose steps differ (a crash between the
two renames) is refused rather than resumed from mismatched halves."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import ConfigError, InputFileError
from ...loaders import FileContext, MiB, decode_utf8, load_json, loads_json, read_bytes

CHECKPOINT_NAME = "checkpoint"          # the folder under --checkpoint-dir
TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "checkpoint.json"
FORMAT = "tinyserve-train-checkpoint"
VERSION = 1
# The "small" model's checkpoint is ~130 MB (weights + two AdamW moments, fp32); the
# limit only stops a wrong file from being read whole into memory.
MAX_TENSOR_BYTES = 4096 * MiB
MAX_STATE_BYTES = 64 * MiB              # history grows by one small record per log line
# Flags that fix the shapes and the data stream: resuming under others is a new run.
SHAPE_ARGS = ("size", "context", "batch", "vocab_size")
_MODEL, _OPT = "model.", "optimizer."


@dataclass
class Checkpoint:
    folder: Path
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return self.state["step"]


# ---------------------------------------------------------------------------- save
def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(folder: Path, model, opt, sampler, step: int, elapsed: float, history: list,
                    args) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        if t.data_ptr() in seen:      # a tied weight: safetensors refuses shared storage
            t = t.clone()
        seen.add(t.data_ptr())
        tensors[_MODEL + name] = t
    opt_sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in opt_sd["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPT}{idx}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    from safetensors.torch import save_file

    _atomic_write(folder / TENSORS_FILE, lambda p: save_file(
        tensors, str(p), metadata={"format": FORMAT, "step": str(step)}))
    state = {
        "format": FORMAT, "version": VERSION, "step": step, "elapsed": elapsed, "history": history,
        "sampler": sampler.state(), "torch_rng": torch.get_rng_state().tolist(),
        "optimizer": {"param_groups": opt_sd["param_groups"], "scalars": scalars},
        "config": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))},
    }
    text = json.dumps(state, indent=1) + "\n"
    _atomic_write(folder / STATE_FILE, lambda p: p.write_text(text))


# ---------------------------------------------------------------------------- load
def checkpoint_folder(path: Path) -> Path:
    """The checkpoint folder: `path` itself, or the folder of one of its two files."""
    if path.is_dir():
        folder = path
    elif path.name in (TENSORS_FILE, STATE_FILE):
        folder = path.parent
    else:
        raise InputFileError(str(path), None, (
            f"resume: not a training checkpoint (expected a folder with {TENSORS_FILE} and {STATE_FILE}; "
            f"pickled .pt checkpoints are never loaded)"))
    missing = [f for f in (TENSORS_FILE, STATE_FILE) if not (folder / f).is_file()]
    if missing:
        raise InputFileError(str(folder), None, f"resume: not a training checkpoint (no {' or '.join(missing)})")
    return folder


def _need(ctx: FileContext, obj: dict, key: str, kind, check=lambda v: True, what: str = "",
          parent: str = ""):
    v = obj.get(key)
    if not isinstance(v, kind) or isinstance(v, bool) or not check(v):
        raise ctx.error(parent + key, f"expected {what or kind.__name__}, got {str(v)[:40]!r}")
    return v


def _validate_state(ctx: FileContext, state: Any) -> dict:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ctx.error("format", f"not a {FORMAT} state file")
    if state.get("version") != VERSION:
        raise ctx.error("version", f"version {state.get('version')!r} is not the supported {VERSION}")
    _need(ctx, state, "step", int, lambda v: v >= 0, "an integer >= 0")
    _need(ctx, state, "elapsed", (int, float), lambda v: v >= 0, "seconds >= 0")  # type: ignore[arg-type]
    _need(ctx, state, "history", list, lambda v: all(isinstance(r, dict) for r in v), "a list of records")
    _need(ctx, state, "sampler", dict)
    _need(ctx, state, "config", dict)
    _need(ctx, state, "torch_rng", list,
          lambda v: all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in v),
          "a list of bytes (0..255)")
    opt = _need(ctx, state, "optimizer", dict)
    _need(ctx, opt, "param_groups", list, lambda v: all(isinstance(g, dict) for g in v), "a list of objects",
          parent="optimizer.")
    _need(ctx, opt, "scalars", dict, parent="optimizer.")
    return state


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint folder (or one of its two files); nothing unpickled."""
    folder = checkpoint_folder(Path(path))
    state_path, tensors_path = folder / STATE_FILE, folder / TENSORS_FILE
    ctx = FileContext(str(state_path))
    state = _validate_state(ctx, load_json(state_path, max_bytes=MAX_STATE_BYTES))
    data = read_bytes(tensors_path, max_bytes=MAX_TENSOR_BYTES)
    try:
        from safetensors.torch import load as load_tensors

        tensors = load_tensors(data)
    except Exception as e:  # safetensors raises its own SafetensorError and others
        raise InputFileError(str(tensors_path), None, f"resume: not a readable safetensors file ({e})") from None
    meta = _metadata(data, FileContext(str(tensors_path)))
    if meta.get("format") != FORMAT or meta.get("step") != str(state["step"]):
        raise InputFileError(str(folder), None, (
            f"resume: {TENSORS_FILE} (step {meta.get('step')}) and {STATE_FILE} (step {state['step']}) "
            f"are not one checkpoint"))
    return Checkpoint(folder, tensors, state)


def _metadata(data: bytes, ctx: FileContext) -> dict[str, str]:
    """The `__metadata__` of a safetensors file that already loaded: its header is an
    8-byte little-endian length, then that many bytes of JSON."""
    n = int.from_bytes(data[:8], "little")
    header = loads_json(decode_utf8(data[8:8 + n], ctx, "header"), ctx, field="header")
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def check_matches(ck: Checkpoint, args) -> None:
    """The run resumes with the flags that fixed the checkpoint's shapes and data."""
    saved = ck.state["config"]
    for name in SHAPE_ARGS:
        if name in saved and saved[name] != getattr(args, name, None):
            flag = "--" + name.replace("_", "-")
            raise ConfigError("--resume", f"{ck.folder} was trained with {flag} {saved[name]}, "
                                          f"this run has {getattr(args, name, None)}")


def restore(ck: Checkpoint, model, opt, sampler) -> None:
    """Model, optimizer, data stream and torch RNG as they were at the checkpoint."""
    t = ck.tensors
    model_sd = {k[len(_MODEL):]: v for k, v in t.items() if k.startswith(_MODEL)}
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in t.items():
        if k.startswith(_OPT):
            idx, key = k[len(_OPT):].split(".", 1)
            opt_state.setdefault(int(idx), {})[key] = v
    for idx, values in ck.state["optimizer"]["scalars"].items():
        opt_state.setdefault(int(idx), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in ck.state["optimizer"]["param_groups"]]
    try:
        model.load_state_dict(model_sd)
        opt.load_state_dict({"state": opt_state, "param_groups": groups})
        sampler.set_state(ck.state["sampler"])
        torch.set_rng_state(torch.tensor(ck.state["torch_rng"], dtype=torch.uint8))
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputFileError(str(ck.folder), None, f"resume: checkpoint does not fit this run ({first})") from None
