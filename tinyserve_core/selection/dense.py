"""`dense`: every page, every layer. The selector returns None, so attention runs
the exact dense path and the output equals an engine without a selector bit for bit."""

from __future__ import annotations

from dataclasses import dataclass

from .base import EXEMPT, Policy, SelectContext, Selection


@dataclass(frozen=True, slots=True)
class DenseParams:
    pass


class DensePolicy(Policy):
    name = "dense"
    Params = DenseParams
    _validators = {}
    reads_bounds = False   # attends every page

    def select(self, ctx: SelectContext) -> Selection:
        return EXEMPT
