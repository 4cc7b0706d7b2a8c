"""Chooses the implementation of the ops for a device.

CPU tensors always use the torch reference. CUDA tensors use the compiled extension
(csrc/) when it can be built; otherwise the reference runs and says so once.
TINYSERVE_KERNELS=reference|cuda forces a backend. Importing never compiles."""

from __future__ import annotations

import os
import sys
import types

import torch

from . import reference

_warned = False


def _forced() -> str | None:
    v = os.environ.get("TINYSERVE_KERNELS", "").strip().lower()
    if v in ("", "auto"):
        return None
    if v not in ("reference", "cuda"):
        raise ValueError(f"TINYSERVE_KERNELS: {v!r} is not one of reference, cuda, auto")
    return v


def _say_once(msg: str) -> None:
    global _warned
    if not _warned:
        print(f"tinyserve: {msg}", file=sys.stderr)
        _warned = True


def _cuda_ops() -> types.ModuleType | None:
    """The compiled extension, or None when it cannot be had here."""
    return None


def backend_for(device: torch.device) -> types.ModuleType:
    forced = _forced()
    if device.type != "cuda" or forced == "reference":
        return reference
    ops = _cuda_ops()
    if ops is None:
        if forced == "cuda":
            raise RuntimeError("TINYSERVE_KERNELS=cuda but the CUDA extension is not available")
        _say_once("CUDA extension not available; using the torch reference kernels")
        return reference
    return ops


def backend_info() -> dict:
    return {
        "backend": "reference" if not torch.cuda.is_available() else "cuda-unbuilt",
        "reason": "no CUDA device" if not torch.cuda.is_available() else "extension not built",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
