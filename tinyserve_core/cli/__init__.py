"""`tinyserve`: generate, simulate, attach, info, train-lm, train-scene, workload, check-trace,
bench …, eval …, soak.

One module per command family holds its argument parsing, progress bars and printing;
the library below exposes functions and dataclasses only. Bad flags or config values
print one line naming the field and exit 2; no traceback. Command modules import the
library lazily so `tinyserve info` stays fast and one subsystem's missing optional
piece never breaks the others."""

from __future__ import annotations

import argparse
import sys

from ..errors import TinyServeError
from . import attach, bench, eval as eval_, generate, info, simulate, soak, trace, train, workload
from ._parser import Parser

# --help lists the commands in this order
_FAMILIES = (generate, simulate, attach, info, train, workload, trace, bench, eval_, soak)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = Parser(prog="tinyserve", description="TinyServe: watch and measure LLM serving memory.")
    parser.add_argument("--version", action="version", version=f"tinyserve {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for family in _FAMILIES:
        family.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TinyServeError as e:
        print(f"tinyserve {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
