"""Value checks shared by the config sections: JSON/CLI values coerced to a field's
type, and range/choice checks whose ConfigError names the flat key."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ...errors import ConfigError
from ...selection.params import check_bool


def coerce(name: str, value: Any, f: dataclasses.Field) -> Any:
    """JSON/CLI values to the field's type, with a message naming the field."""
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = "None" in typ
    if value is None:
        if optional:
            return None
        raise ConfigError(name, "must not be null")
    base = typ.replace(" | None", "").replace("None | ", "")
    try:
        if base == "bool":
            return check_bool(name, value)
        if base == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {base}, got {value!r}") from None
    return value


def choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {value!r}")


def int_range(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(name, f"must be an integer from {lo} to {hi}, got {value!r}")


def float_range(name, value, lo, hi):
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or not lo <= value <= hi):
        raise ConfigError(name, f"must be a number from {lo:g} to {hi:g}, got {value!r}")


def check_context(max_model_len: int | None, context: int) -> int:
    """The context a run uses: max_model_len, which may not exceed the model's own
    (positions past it were never trained, and RoPE tables stop there)."""
    if max_model_len is None:
        return context
    if max_model_len > context:
        raise ConfigError("max_model_len", f"{max_model_len} is above the model's context of {context} "
                                           "(max_position_embeddings in its config.json)")
    return max_model_len
