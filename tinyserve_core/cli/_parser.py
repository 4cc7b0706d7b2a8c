"""What every command module shares: the parser class (one-line errors, defaults in
help), the argument types that name their flag, and the guard that lets a missing
third-party package drop only the subcommand that needs it."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Callable


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with its default; module docstrings keep their layout."""


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def optional(register: Callable[[], object]) -> None:
    """Runs one subcommand's registration. A third-party dependency this machine lacks
    (the GPU hosts have no PySide6 or OMPL) leaves that subcommand out; a missing module
    of ours is a bug and raises. Registrations import before they add their parser, so
    a dropped command leaves nothing half-built."""
    try:
        register()
    except ModuleNotFoundError as e:
        if e.name and not e.name.startswith(("tinyserve_core", "app")):
            return
        raise


def add_from_module(sub, module: str, requires: str | None = None) -> None:
    """Registers the subcommand of a module named by string (`add_parser(sub)` +
    `run(args)`), so the Qt benchmarks under `app` register without the core importing
    `app`; skipped when the package it `requires` is not installed."""
    if requires is not None and importlib.util.find_spec(requires) is None:
        return

    def register():
        mod = importlib.import_module(module)
        p = mod.add_parser(sub)
        if p is not None and p.get_default("func") is None:
            p.set_defaults(func=mod.run)
    optional(register)


def _checked(flag: str, conv, ok, what: str):
    """An argparse type: `conv` the text, then `ok` the value (NaN fails `x >= 0`)."""
    def parse(v):
        try:
            x = conv(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {v!r}")
        if not ok(x):
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {v!r}")
        return x
    return parse


def positive_int(flag: str):
    return _checked(flag, int, lambda x: x >= 1, "a positive integer")


def nonneg_float(flag: str):
    return _checked(flag, float, lambda x: x >= 0, "a number >= 0")


def with_default(text: str | None, default) -> str:
    """Help of a flag whose parser default is SUPPRESS (so only flags given on the
    command line override a config file): the default is written into the text."""
    return f"{text or ''} (default: {default})".strip()
