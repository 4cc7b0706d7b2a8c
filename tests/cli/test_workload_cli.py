"""`tinyserve workload`: writes a replay file that loads; bad flags name their field."""

from __future__ import annotations

import json

import pytest

from tinyserve_core.cli import build_parser
from tinyserve_core.engine.workloads import load_replay
from tinyserve_core.errors import ConfigError


def _cli(argv):
    args = build_parser().parse_args(["workload", *argv])
    return args.func(args)


def test_cli_writes_a_replay_file_that_loads(tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "w.jsonl"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"requests": 7, "rate": 2.0, "block_size": 16, "prompt_dist": "fixed",
                               "prompt_len": 48}))
    assert _cli(["--config", str(cfg), "--n", "2", "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    reqs = load_replay(out)
    assert len(reqs) == 7 and all(r.n == 2 and len(r.prompt_token_ids) == 48 for r in reqs)
    assert "7 requests" in capsys.readouterr().out


def test_cli_bad_flag_names_the_field(tmp_path):
    with pytest.raises(ConfigError) as e:
        _cli(["--rate", "fast", "--out", str(tmp_path / "w.jsonl")])
    assert e.value.field == "rate"
