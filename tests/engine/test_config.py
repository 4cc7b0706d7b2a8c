"""EngineConfig: the one set of settings behind flags, config files and GUI fields,\nread by code in sections and by people in flat keys."""

import dataclasses
import json
from pathlib import Path

import pytest

from tinyserve_core.engine.config import (HELP, RESTART_KEYS, SELECTION_KEYS, WORKLOAD_KEYS, CacheConfig,
                                          EngineConfig, ModelLoadConfig, OutputConfig, SamplingConfig,
                                          SchedulerConfig, SelectionConfig, WorkloadConfig)
from tinyserve_core.errors import ConfigError, InputFileError


def test_round_trip_through_json(tmp_path):
    cfg = EngineConfig.from_dict({"block_size": 32, "policy": "quest", "budget": 0.125,
                                  "stats": True, "rate": 2.5})
    p = tmp_path / "c.json"
    cfg.save(p)
    assert EngineConfig.load(p) == cfg


@pytest.mark.parametrize("key,value", [
    ("block_size", 24), ("block_size", 256), ("num_blocks", 0), ("rate", -1),
    ("rate", "fast"), ("policy", "magic"), ("top_p", 0), ("n", 0), ("budget", 0),
    ("shared_prefix_frac", 1.5), ("stats", "maybe"), ("device", "tpu"), ("max_num_seqs", 2.5),
    ("quant_bits", 6), ("estimate_top_p", 1.5), ("candidates", 0.5),
])
def test_bad_values_name_the_field(key, value):
    with pytest.raises(ConfigError) as e:
        EngineConfig.from_dict({key: value})
    assert e.value.field == key


def test_unknown_key_and_bad_json_are_reported(tmp_path):
    with pytest.raises(ConfigError) as e:
        EngineConfig.from_dict({"blok_size": 16})
    assert e.value.field == "blok_size"
    p = tmp_path / "bad.json"
    p.write_text('{"block_size": 16,\n "rate": }')
    with pytest.raises(InputFileError) as e:
        EngineConfig.load(p)
    assert str(e.value).startswith(f"{p}:2: config: invalid JSON")


@pytest.mark.parametrize("content, problem", [
    (b'{"rate": "\xff"}', ":1: config: not UTF-8 text"),
    ('{"rate": ' + "9" * 400 + "}", ": config: integer of 400 digits is out of range"),
    ("[" * 100_000 + "]" * 100_000, ": config: nested deeper than"),
    ("[1, 2]", ": config: must be a JSON object of settings, got list"),
    ('{"rate": 1e999}', ": config: number 1e999 is out of range"),
    ('{"rate": -1}', ": rate: must be a number from"),
    ('{"blok_size": 16}', ': "blok_size": unknown setting'),
    ('{"": 16}', ': "": unknown setting'),
    ('{"n": 65}', ": n: must be an integer from 1 to 64"),
])
def test_session_files_are_read_under_the_loader_discipline(tmp_path, content, problem):
    """Every problem of a session file is one InputFileError: path[:line]: key: problem."""
    p = tmp_path / "s.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputFileError) as e:
        EngineConfig.load(p)
    assert str(e.value).startswith(str(p)) and problem in str(e.value), str(e.value)


def test_a_folder_or_an_oversized_file_is_no_session_file(tmp_path):
    from tinyserve_core.engine.config import MAX_CONFIG_BYTES
    with pytest.raises(InputFileError, match="config: is a directory"):
        EngineConfig.load(tmp_path)
    big = tmp_path / "big.json"
    big.write_text(" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(InputFileError, match=f"over the limit of {MAX_CONFIG_BYTES}"):
        EngineConfig.load(big)


def test_strings_from_flags_are_coerced():
    cfg = EngineConfig.from_dict({"block_size": "8", "rate": "1.5", "stats": "true"})
    assert (cfg.cache.block_size, cfg.workload.rate, cfg.selection.stats) == (8, 1.5, True)


def test_live_changes_split_restart_keys():
    a = EngineConfig()
    b = a.replace(block_size=32, rate=9.0)
    live, restart = a.live_changes(b)
    assert live == {"rate": 9.0} and restart == {"block_size"}


def test_live_changes_see_every_section():
    a = EngineConfig()
    b = a.replace(max_num_seqs=4, temperature=0.0, policy="quest", trace="t.json", seed=5,
                  enable_prefix_caching=False)
    live, restart = a.live_changes(b)
    assert live == {"max_num_seqs": 4, "temperature": 0.0, "policy": "quest",
                    "trace": "t.json", "seed": 5}
    assert restart == {"enable_prefix_caching"}


def test_replace_leaves_the_base_alone():
    a = EngineConfig()
    b = a.replace(block_size=32, policy="quest", seed=3)
    assert (a.cache.block_size, a.selection.policy, a.seed) == (16, "dense", 0)
    assert (b.cache.block_size, b.selection.policy, b.seed) == (32, "quest", 3)
    assert a.cache is not b.cache and a.workload is not b.workload


def test_flat_keys_name_one_field_each():
    cfg = EngineConfig.from_dict({"num-blocks": 64, "top_p_mass": 0.5})
    assert cfg.get("num_blocks") == cfg.cache.num_blocks == 64
    assert cfg.get("top_p_mass") == cfg.selection.top_p_mass == 0.5
    assert cfg.get("top_p") == cfg.sampling.top_p == 0.95     # sampling's, a different key
    assert [f.name for f in EngineConfig.flat_fields()] == list(HELP)
    with pytest.raises(ConfigError) as e:
        cfg.get("blok_size")
    assert e.value.field == "blok_size"


def test_key_sets_follow_the_sections():
    from tinyserve_core.engine.workloads import WorkloadSpec

    assert RESTART_KEYS == {"model", "device", "dtype", "block_size", "num_blocks",
                            "enable_prefix_caching", "kv_cache_dtype", "max_model_len"}
    assert SELECTION_KEYS == {"policy", "budget", "top_p_mass", "sink_pages", "dense_layers",
                              "recent_pages", "candidates", "estimate_top_p", "quant_bits", "tier_pages",
                              "tier_policy", "stats"}
    # a live change regenerates the arrivals exactly when it touches what the generator reads
    assert WORKLOAD_KEYS == {f.name for f in dataclasses.fields(WorkloadSpec)}
    params = EngineConfig.from_dict({"top_p_mass": 0.7, "top_p": 0.5}).selection.selector_params()
    # the policies' attention mass keeps its key's name: top_p only ever means sampling
    assert params["top_p_mass"] == 0.7 and "top_p" not in params
    assert set(params) == SELECTION_KEYS


# Saved by the code before the split (one flat dataclass), checked in: they must keep
# loading into the same values, and saving them again must write the same file.
DATA = Path(__file__).parent / "data"


def test_session_files_saved_before_the_split_still_load():
    cfg = EngineConfig.load(DATA / "session_v1.json")
    assert cfg.model == ModelLoadConfig(model="checkpoints/my-llama", device="cpu", dtype="float32",
                                        max_model_len=1024)
    assert cfg.cache == CacheConfig(block_size=8, num_blocks=512, enable_prefix_caching=False)
    assert cfg.scheduler == SchedulerConfig(max_num_seqs=7, max_num_batched_tokens=777)
    assert cfg.seed == 42
    assert cfg.sampling == SamplingConfig(temperature=0.5, top_p=0.9, top_k=20, n=2)
    assert cfg.workload == WorkloadConfig(
        workload="passkey", replay_file=None, text_dir="some/texts", rate=2.5, duration=12.5,
        requests=None, prompt_len=100, prompt_len_max=300, prompt_dist="uniform", prompt_sigma=0.3,
        output_len=20, output_len_max=40, output_dist="fixed", output_sigma=0.1, passkey_depth=0.25,
        shared_prefix_frac=0.5, shared_prefix_len=64, num_prefix_groups=3)
    assert cfg.selection == SelectionConfig(policy="quest", budget=0.5, top_p_mass=0.95, sink_pages=2,
                                            dense_layers=1, recent_pages=3, tier_pages=16,
                                            tier_policy="lfu", stats=True)
    assert cfg.output == OutputConfig(trace="out/trace.json", metrics="out/metrics.csv",
                                      summary_json="out/summary.json")

    replay = EngineConfig.load(DATA / "session_v1_replay.json")
    assert (replay.workload.workload, replay.workload.replay_file, replay.workload.requests) == (
        "replay", "traces/run.jsonl", None)
    assert (replay.selection.policy, replay.selection.budget, replay.sampling.n) == ("adaptive", 512, 3)

    assert EngineConfig.load(DATA / "session_v1_default.json") == EngineConfig()


@pytest.mark.parametrize("name", ["session_v1.json", "session_v1_default.json", "session_v1_replay.json"])
def test_saving_writes_the_same_flat_file(tmp_path, name):
    EngineConfig.load(DATA / name).save(tmp_path / name)
    old, new = (json.loads((d / name).read_text()) for d in (DATA, tmp_path))
    # keys added since v1 are written with their defaults; the rest keep their order and
    # values (a float field loads 256 as 256.0)
    added = {"profile": False, "profile_every": 128, "profile_budget": 0.05, "kv_events": None, "kv_events_replay": None,
             "candidates": 4.0, "estimate_top_p": 0.0, "quant_bits": 4,
             "kv_cache_dtype": "auto"}
    assert {k: new[k] for k in added} == added
    kept = {k: v for k, v in new.items() if k not in added}
    assert list(kept) == list(old) and kept == old
