"""Where the package's shipped files live: the model, prompt and held-out text, scenes
(`assets/`) and the CUDA sources (`csrc/`).

Both folders are package data, so they sit inside the installed package whether it came
from a wheel or an editable checkout; importlib.resources finds them in either case, and
nothing else in the package builds a path to them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_dir() -> Path:
    root = files(__package__)
    # A wheel installs as plain files; only a zipped import would give a non-Path here,
    # and torch's loaders need real files, so that case is an error, not a copy.
    if not isinstance(root, Path):
        raise RuntimeError(f"{__package__} is not installed as files on disk ({root!r})")
    return root


def asset_path(*parts: str) -> Path:
    """A path under the shipped assets, e.g. asset_path("models", "tinyserve-lm")."""
    return package_dir().joinpath("assets", *parts)


def csrc_dir() -> Path:
    """The CUDA extension's sources (built on first CUDA use by kernels/_backend.py)."""
    return package_dir() / "csrc"
