import json

import pytest

from tinyserve_core.errors import ConfigError
from tinyserve_core.cli import build_parser


def parse(argv):
    return build_parser().parse_args(["bench", "kv", *argv])


def test_bench_kv_small_run_writes_coherent_json(tmp_path, capsys):
    out = tmp_path / "kv.json"
    args = parse(["--num-blocks", "1024", "--seqs", "16", "--prompt-len", "40",
                  "--requests", "30", "--json", str(out)])
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    assert data["num_blocks"] == 1024 and data["block_size"] == 16
    assert all(v > 0 for v in data["ops"].values())
    assert set(data["ops_4x_pool"]) == set(data["ops"])
    w = data["waste"]
    assert len(w) == 3
    shared = next(v for k, v in w.items() if "shared" in k)
    assert shared["prefix_hit_rate"] > 0
    assert all(0 <= v["mean_waste"] < v["reserved_waste"] for v in w.values())
    assert "kv benchmark on" in capsys.readouterr().out


@pytest.mark.parametrize("argv, field", [(["--seqs", "0"], "--seqs"),
                                         (["--block-size", "24"], "block_size"),
                                         (["--num-blocks", "64"], "num_blocks")])
def test_bench_kv_bad_values_name_the_field(argv, field):
    args = parse(argv)
    with pytest.raises(ConfigError) as err:
        args.func(args)
    assert err.value.field == field
