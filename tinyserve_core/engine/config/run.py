"""EngineConfig: a run's settings, composed of one section per concern, shared by
`tinyserve simulate` (flags and `--config` JSON files) and the GUI (fields, File >
Save/Open config).

Code reads the sections (`cfg.cache.block_size`, `cfg.selection.policy`); people and
files use FLAT keys: every field name is unique across the sections and is the JSON key
and, with dashes, the CLI flag. Which section a key lives in also says how a change to
it is applied (the key sets at the end). Validation happens here, where people's input
enters, and raises ConfigError naming the flat key."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...selection.registry import POLICIES, fp8_cache_conflict
from ...loaders import MiB, FileContext, loads_json, read_text
from ...writers import write_json
from .checks import coerce, int_range
from .help import HELP
from .sections import (CacheConfig, ModelLoadConfig, OutputConfig, SamplingConfig,
                       SchedulerConfig, SelectionConfig, WorkloadConfig)


@dataclass
class EngineConfig:
    model: ModelLoadConfig = field(default_factory=ModelLoadConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)   # what a run records and writes
    # Seeds the workload and sampling alike, so it belongs to neither section.
    seed: int = 0

    # -- flat keys ----------------------------------------------------------------
    @classmethod
    def flat_fields(cls) -> list[dataclasses.Field]:
        """Every setting's field, in the order of JSON files and --help."""
        return [f for _, f in _FLAT.values()]

    def get(self, key: str) -> Any:
        """The value of a flat key (`"block_size"`); ConfigError for an unknown key."""
        section, f = _lookup(key)
        return getattr(self._holder(section), f.name)

    def _holder(self, section: str | None):
        return self if section is None else getattr(self, section)

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], base: "EngineConfig | None" = None) -> "EngineConfig":
        if not isinstance(d, dict):
            raise ConfigError("config", "must be a JSON object of settings")
        cfg = base.copy() if base is not None else cls()
        for key, value in d.items():
            section, f = _lookup(key)
            setattr(cfg._holder(section), f.name, coerce(f.name, value, f))
        cfg.validate(changed=d.keys())
        return cfg

    def copy(self) -> "EngineConfig":
        # sections hold only immutable values: one level of copying is a deep copy
        return dataclasses.replace(self, **{s: dataclasses.replace(getattr(self, s))
                                            for s in SECTIONS})

    @classmethod
    def load(cls, path: str | Path) -> "EngineConfig":
        """A session file; every problem, read or value, is one InputFileError that
        reads `path[:line]: key: problem`."""
        return cls.from_file_dict(read_settings(path), path)

    @classmethod
    def from_file_dict(cls, d: dict[str, Any], path: str | Path) -> "EngineConfig":
        """`from_dict` of settings read from `path`, whose errors name the file too."""
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            # an unknown key is shown as written, quoted: it may be empty or hold ': '
            known = e.field.replace("-", "_") in _FLAT or e.field == "config"
            field = e.field if known else json.dumps(e.field, ensure_ascii=False)
            raise FileContext(str(path)).error(field, e.message) from None

    def to_dict(self) -> dict[str, Any]:
        return {key: self.get(key) for key in _FLAT}

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict(), "config")

    def replace(self, **changes) -> "EngineConfig":
        return EngineConfig.from_dict(changes, base=self)

    # -- validation ---------------------------------------------------------------
    def validate(self, changed=()) -> None:
        """Each section's own checks, then the combinations across sections; a combination
        that fails names the key just `changed` (the field a person edited), else the
        restart key."""
        for section in SECTIONS:
            getattr(self, section).validate()
        int_range("seed", self.seed, 0, 2**63 - 1)
        why = None if self.cache.kv_cache_dtype == "auto" else fp8_cache_conflict(self.selection.policy)
        if why is not None:
            key = "policy" if "policy" in changed and "kv_cache_dtype" not in changed else "kv_cache_dtype"
            raise ConfigError(key, (
                f"{why} (kv_cache_dtype {self.cache.kv_cache_dtype}): use policy "
                f"{' / '.join(n for n in POLICIES if fp8_cache_conflict(n) is None)}, or kv_cache_dtype auto"))

    def live_changes(self, other: "EngineConfig") -> tuple[dict[str, Any], set[str]]:
        """Split the differences to `other` into live-appliable ones and restart keys."""
        live, restart = {}, set()
        for key in _FLAT:
            a, b = self.get(key), other.get(key)
            if a != b:
                if key in RESTART_KEYS:
                    restart.add(key)
                else:
                    live[key] = b
        return live, restart


# A session file is about 2 KB; anything near this is not one (and is not read whole).
MAX_CONFIG_BYTES = 1 * MiB


def read_settings(path: str | Path) -> dict[str, Any]:
    """The JSON object of a session file, read under the loader discipline (bounded,
    UTF-8, depth and numbers checked); values are not validated yet."""
    ctx = FileContext(str(path))
    data = loads_json(read_text(path, max_bytes=MAX_CONFIG_BYTES, field="config"), ctx, field="config")
    if not isinstance(data, dict):
        raise ctx.error("config", f"must be a JSON object of settings, got {type(data).__name__}")
    return data


# section attribute -> its dataclass, in declaration order
SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(EngineConfig)
                             if f.default_factory is not dataclasses.MISSING}


def _flat_fields() -> dict[str, tuple[str | None, dataclasses.Field]]:
    """flat key -> (its section, or None for a top-level field; its dataclass field),
    in HELP's order."""
    found: dict[str, tuple[str | None, dataclasses.Field]] = {}
    for section, cls in [*SECTIONS.items(), (None, EngineConfig)]:
        for f in dataclasses.fields(cls):
            if section is None and f.name in SECTIONS:
                continue
            if f.name in found:   # a flat key must name one field, or files become ambiguous
                raise TypeError(f"setting {f.name!r} is declared in two sections")
            found[f.name] = (section, f)
    if set(found) != set(HELP):
        raise TypeError(f"HELP and the config fields differ: {sorted(set(found) ^ set(HELP))}")
    return {key: found[key] for key in HELP}


_FLAT = _flat_fields()


def _lookup(key: str) -> tuple[str | None, dataclasses.Field]:
    name = key.replace("-", "_")
    if name not in _FLAT:
        raise ConfigError(key, f"unknown setting (known: {', '.join(sorted(_FLAT))})")
    return _FLAT[name]


def section_keys(*sections: str) -> frozenset[str]:
    """The flat keys of the named sections."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise KeyError(f"no config section {sorted(unknown)}")
    return frozenset(k for k, (s, _) in _FLAT.items() if s in sections)


# How a change to a key is applied follows from its section:
# a new model or KV pool: the engine is rebuilt
RESTART_KEYS = section_keys("model", "cache")
# handed to the live page selector
SELECTION_KEYS = section_keys("selection")
# read when the workload is generated (samples per request and the seed included): a
# live change regenerates the arrivals still to come
WORKLOAD_KEYS = section_keys("workload") | {"n", "seed"}
