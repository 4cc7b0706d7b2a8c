"""A run's settings: `EngineConfig`, composed of focused sections, read and written
with flat keys (JSON session files, CLI flags, GUI fields)."""

from .help import HELP
from .run import (MAX_CONFIG_BYTES, RESTART_KEYS, SECTIONS, SELECTION_KEYS, WORKLOAD_KEYS, EngineConfig,
                  read_settings, section_keys)
from .sections import (DEVICES, DTYPES, KV_CACHE_DTYPES, LENGTH_DISTS, POLICIES, TIER_POLICIES, WORKLOADS, CacheConfig,
                       ModelLoadConfig, OutputConfig, SamplingConfig, SchedulerConfig, SelectionConfig,
                       WorkloadConfig)

__all__ = [
    "DEVICES", "DTYPES", "HELP", "KV_CACHE_DTYPES", "LENGTH_DISTS", "MAX_CONFIG_BYTES", "POLICIES", "RESTART_KEYS", "SECTIONS",
    "SELECTION_KEYS", "TIER_POLICIES", "WORKLOADS", "WORKLOAD_KEYS", "CacheConfig", "EngineConfig", "ModelLoadConfig",
    "OutputConfig", "SamplingConfig", "SchedulerConfig", "SelectionConfig", "WorkloadConfig", "read_settings",
    "section_keys",
]
