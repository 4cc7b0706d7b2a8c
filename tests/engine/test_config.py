"""EngineConfig: the one set of settings behind flags, config files and GUI fields."""

import json

import pytest

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.errors import ConfigError


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
    with pytest.raises(ConfigError) as e:
        EngineConfig.load(p)
    assert "line 2" in str(e.value)


def test_strings_from_flags_are_coerced():
    cfg = EngineConfig.from_dict({"block_size": "8", "rate": "1.5", "stats": "true"})
    assert (cfg.block_size, cfg.rate, cfg.stats) == (8, 1.5, True)


def test_live_changes_split_restart_keys():
    a = EngineConfig()
    b = a.replace(block_size=32, rate=9.0)
    live, restart = a.live_changes(b)
    assert live == {"rate": 9.0} and restart == {"block_size"}
