"""`tinyserve eval selection` end to end on a tiny random model (built here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinyserve_core.errors import ConfigError, InputFileError
from tinyserve_core.cli import build_parser
from tinyserve_core.cli.eval import spec_from_args
from tinyserve_core.eval import selection as ev
from tinyserve_core.model.config import ModelConfig
from tinyserve_core.model.llama import LlamaForCausalLM
from tinyserve_core.model.loader import save_model
from tinyserve_core.model.tokenizer import Tokenizer
from tinyserve_core.model.train import bpe

TEXT = ("Paged attention keeps keys and values in fixed-size blocks. The pass key is 12345. "
        "Prefix caching reuses the blocks of a shared system prompt; copy on write splits them. ") * 20


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    raw = bpe.train_tokenizer([TEXT], vocab_size=320, min_vocab=256)
    tok = Tokenizer(raw, eos_token_ids=[bpe.eos_id(raw)])
    cfg = ModelConfig(vocab_size=raw.get_vocab_size(), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512)
    path = tmp_path_factory.mktemp("tiny-lm")
    save_model(LlamaForCausalLM(cfg), tok, path)
    return path


def _parse(argv):
    return build_parser().parse_args(["eval", "selection", *argv])


@pytest.mark.slow
def test_harness_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "r.json"
    args = _parse(["--model", str(tiny_model_dir), "--json", str(out), "--md", str(tmp_path / "r.md"),
                   "--plots", str(tmp_path / "plots"), "--budgets", "32,1/8", "--block-sizes", "8,16",
                   "--top-p", "0.9,1.0",
                   "--context", "160", "--decode-tokens", "6", "--text-samples", "2",
                   "--passkey-samples", "2", "--passkey-lengths", "120,160", "--dense-layers", "1"])
    assert args.func(args) == 0
    rep = json.loads(out.read_text())
    rows = rep["results"]
    # block sizes x (dense + 4 policies x 2 budgets + adaptive x 2 budgets x 2 top_p
    #                + twostage x 2 budgets x (fixed + 2 top_p) + oracle_p x 2 top_p)
    assert len(rows) == 2 * (1 + 4 * 2 + 2 * 2 + 2 * 3 + 2)
    assert rep["verdict"] is None and "not measured here" in rep["decode_timing"]
    for r in rows:
        assert r["bound_violations"] == 0
        assert 0.0 <= r["mass_recall"] <= r["oracle_mass"] + 1e-6 <= 1.0 + 2e-6 and 0.0 < r["pages_frac"] <= 1.0
        assert r["perplexity"] > 1.0 and r["passkey_accuracy"] is not None
        assert set(r["passkey"]) == {"120", "160"} and all(p["n"] == 2 for p in r["passkey"].values())
        for p in r["passkey"].values():
            assert p["ci95"][0] <= p["accuracy"] <= p["ci95"][1]
        if r["policy"] == "dense":
            assert r["agreement"] == 1.0 and r["ppl_vs_dense"] == 0.0 and r["pages_frac"] == 1.0
        else:
            # 160 tokens: both budgets select a subset (oracle_p at p=1 needs every page)
            assert r["pages_frac"] < 1.0 or (r["policy"], r["top_p"]) == ("oracle_p", 1.0)
            assert set(r["extra"]["per_layer_mass_recall"]) == {"1", "2"}
    q = next(r for r in rows if r["policy"] == "quest" and r["budget"] == "32" and r["block_size"] == 8)
    assert q["mean_pages"] == pytest.approx(4.0)  # 32 tokens / 8 per page
    targets = {t["target"].split(":")[0] for t in rep["targets"]}
    assert {"quest @1/8", "adaptive", "streaming @1/8", "h2o @1/8", "oracle @1/8", "twostage @1/8",
            "twostage top-p", "oracle_p p=0.9"} <= targets
    two = [r for r in rows if r["policy"] == "twostage" and r["block_size"] == 16]
    assert sorted((r["budget"], r["top_p"] or 0) for r in two) == [
        ("1/8", 0), ("1/8", 0.9), ("1/8", 1.0), ("32", 0), ("32", 0.9), ("32", 1.0)]
    orp = {r["top_p"]: r for r in rows if r["policy"] == "oracle_p" and r["block_size"] == 16}
    assert orp[0.9]["budget"] is None and orp[0.9]["mass_recall"] >= 0.9 - 1e-6
    assert orp[0.9]["pages_frac"] < orp[1.0]["pages_frac"]
    oracle = next(r for r in rows if r["policy"] == "oracle" and r["budget"] == "1/8" and r["block_size"] == 16)
    quest = next(r for r in rows if r["policy"] == "quest" and r["budget"] == "1/8" and r["block_size"] == 16)
    assert oracle["mass_recall"] >= quest["mass_recall"] - 1e-6  # the best ranking at the same budget
    md = (tmp_path / "r.md").read_text()
    assert "| 16 | quest | 1/8 |" in md and "| 16 | adaptive p=1 | 32 |" in md and "| 16 | twostage | 1/8 |" in md
    assert "pass-key 160 (95% CI)" in md
    assert "(plots/selection_accuracy_bs16.png)" in md   # links relative to the report
    for r in rows:  # quest and adaptive runs replay their selections through LRU and LFU tiers
        tiers = r["extra"].get("tiers")
        assert (tiers is not None) == (r["policy"] in ("quest", "adaptive"))
        for t in tiers or []:
            assert 0.0 <= t["hit_rate"] <= 1.0 and t["tier_policy"] in ("lru", "lfu")
    assert "LRU hit rate" in (tmp_path / "r.md").read_text()
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "selection_accuracy_bs16.png", "selection_accuracy_bs8.png"]


def test_full_budget_run_equals_dense(tiny_model_dir):
    from tinyserve_core.model.loader import load_model
    model, tok = load_model(tiny_model_dir)
    tokens = np.asarray(tok.encode(TEXT), dtype=np.int64)
    spec = ev.EvalSpec(policies=("dense", "quest", "adaptive"), budgets=("1.0",), block_sizes=(8,),
                       context=96, decode_tokens=5, text_samples=2, passkey_samples=1, passkey_lengths=(96,),
                       top_ps=(1.0,))
    res = ev.evaluate(model, tok, tokens, spec, progress=False)
    dense = res[0]
    for r in res[1:]:
        assert r.perplexity == dense.perplexity and r.agreement == 1.0 and r.mass_recall == pytest.approx(1.0)


def test_an_fp8_cache_moves_the_dense_run_a_little_and_quest_selects_over_its_bounds(tiny_model_dir):
    """--kv-cache-dtype fp8: the dense run reads an e4m3 cache (perplexity moved, but within a
    few percent), restored between runs like the 16-bit one; quest ranks by the cache's code
    bounds, which bound the dequantised keys (no violations in the statistics); policies that
    twostage (a quantised key copy, which an FP8 cache does not keep) is refused."""
    import torch

    from tinyserve_core.model.loader import load_model
    model, tok = load_model(tiny_model_dir)
    tokens = np.asarray(tok.encode(TEXT), dtype=np.int64)
    spec = ev.EvalSpec(policies=("dense", "quest"), budgets=("1.0", "0.5"), block_sizes=(8,), context=96,
                       decode_tokens=5, text_samples=2, passkey_samples=1, passkey_lengths=(96,), top_ps=(1.0,))
    ref = {(r.policy, r.budget): r for r in ev.evaluate(model, tok, tokens, spec, progress=False)}
    fp8 = {(r.policy, r.budget): r for r in ev.evaluate(model, tok, tokens, spec, progress=False,
                                                          kv_cache_dtype=torch.float8_e4m3fn)}
    assert fp8.keys() == ref.keys()
    dense, want = fp8[("dense", None)], ref[("dense", None)]
    assert dense.perplexity != want.perplexity and abs(dense.perplexity / want.perplexity - 1) < 0.05
    half, half16 = fp8[("quest", "0.5")], ref[("quest", "0.5")]
    assert half.bound_violations == 0 and half.pages_frac < 0.9 and 0 < half.mass_recall <= 1.0 + 1e-6
    # the tiny random model's attention is flat: recall about half at half the pages, either cache
    assert abs(half.mass_recall - half16.mass_recall) < 0.05, (half.mass_recall, half16.mass_recall)
    assert abs(half.perplexity / half16.perplexity - 1) < 0.05
    spec.policies = ("dense", "twostage")
    with pytest.raises(ConfigError) as e:
        ev.evaluate(model, tok, tokens, spec, progress=False, kv_cache_dtype=torch.float8_e4m3fn)
    assert e.value.field == "--kv-cache-dtype" and "twostage" in e.value.message


def test_heldout_text_is_the_shipped_text_whatever_the_host_has(tmp_path, monkeypatch):
    from tinyserve_core.model.train import corpus
    # A host whose documentation differs must not change the evaluation text.
    host = tmp_path / "_sources"
    (host / "library").mkdir(parents=True)
    (host / "library" / "abc.rst.txt").write_text("Host text that was never shipped. " * 40)
    monkeypatch.setattr(corpus, "DEFAULT_DOCS_ROOT", host)
    raw = bpe.train_tokenizer([TEXT], vocab_size=320, min_vocab=256)
    ids, source = ev.heldout_tokens(raw, None, 0.05)
    docs = corpus.shipped_heldout_documents(0.05)
    assert source == f"held-out docs ({len(docs)} files, heldout_frac 0.05)"
    assert np.array_equal(ids, corpus.tokenize_documents(raw, docs, 0))


@pytest.mark.parametrize("argv,field", [
    (["--policies", "dense,magic"], "--policies"),
    (["--budgets", "0"], "--budgets"),
    (["--block-sizes", "12"], "--block-sizes"),
    (["--block-sizes", "a,b"], "--block-sizes"),
    (["--decode-tokens", "4096"], "--decode-tokens"),
    (["--top-p", "0"], "--top-p"),
    (["--tier-factors", "2,-1"], "--tier-factors"),
    (["--passkey-lengths", "8"], "--passkey-lengths"),
    (["--twostage-bits", "6"], "--twostage-bits"),
    (["--twostage-candidates", "0.5"], "--twostage-candidates"),
    (["--twostage-candidate-top-p", "1.5"], "--twostage-candidate-top-p"),
])
def test_bad_flags_name_the_flag(argv, field):
    with pytest.raises(ConfigError) as e:
        spec_from_args(_parse(argv))
    assert e.value.field == field


def test_twostage_form_reaches_its_selector():
    from tinyserve_core.eval.selection.runs import _make_selector
    spec = spec_from_args(_parse(["--twostage-bits", "8", "--twostage-candidates", "2",
                                  "--twostage-candidate-top-p", "0.9"]))
    params = _make_selector("twostage", "1/8", None, spec)._policy.params
    assert (params.quant_bits, params.candidates, params.estimate_top_p) == (8, 2.0, 0.0)
    assert params.candidate_top_p == 0.9
    default = _make_selector("twostage", "1/8", 0.99, spec_from_args(_parse([])))._policy.params
    assert (default.quant_bits, default.candidates, default.estimate_top_p) == (4, 4.0, 0.99)


def test_a_failed_output_costs_only_itself(tiny_model_dir, tmp_path, capsys):
    """--plots cannot be a folder (a file stands there): the JSON and Markdown are still
    written, the failure is one line and the exit code 1."""
    (tmp_path / "plots").write_text("a file, not a folder")
    args = _parse(["--model", str(tiny_model_dir), "--json", str(tmp_path / "r.json"),
                   "--md", str(tmp_path / "r.md"), "--plots", str(tmp_path / "plots"),
                   "--policies", "quest", "--budgets", "32", "--block-sizes", "8",
                   "--context", "96", "--decode-tokens", "2", "--text-samples", "1",
                   "--passkey-samples", "1", "--passkey-lengths", "96", "--dense-layers", "1"])
    assert args.func(args) == 1
    assert json.loads((tmp_path / "r.json").read_text())["results"]
    assert "| quest |" in (tmp_path / "r.md").read_text()
    err = [line for line in capsys.readouterr().err.splitlines() if "not written" in line]
    assert len(err) == 1 and "plots" in err[0]


def test_quick_run_writes_json_and_plots_and_judges_nothing(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """--quick alone leaves out/eval-selection-quick.json and its plots (the README's word),
    prints rounded figures and one 'not a verdict' line instead of met / MISSED."""
    monkeypatch.chdir(tmp_path)
    bench = tmp_path / "decode.json"
    bench.write_text(json.dumps({"machine": "NVIDIA H200", "budget": 4096, "block_size": 16, "rows": [
        {"context": 32768, "batch": 1, "dense_ms": 9.0, "quest_ms": 8.0, "twostage_ms": 7.0},
        {"context": 32768, "batch": 64, "dense_ms": 20.0, "quest_ms": 15.0, "twostage_ms": 16.5,
         "quest_eager_ms": 15.5}]}))
    args = _parse(["--quick", "--model", str(tiny_model_dir), "--policies", "quest,twostage",
                   "--budgets", "1/8", "--context", "96", "--decode-tokens", "2", "--text-samples", "1",
                   "--passkey-samples", "2", "--passkey-lengths", "96", "--dense-layers", "1",
                   "--decode-json", str(bench)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "quick: 3 samples, not a verdict" in out
    assert "MISSED" not in out and " met" not in out
    rep = json.loads((tmp_path / "out" / "eval-selection-quick.json").read_text())
    assert rep["verdict"] == "quick: 3 samples, not a verdict" and rep["targets"] == []
    assert [p.name for p in (tmp_path / "out" / "eval-selection-quick").iterdir()] == ["selection_accuracy_bs16.png"]
    by = {(r["policy"], r["top_p"]): r for r in rep["results"]}
    # the 32K step of the largest batch, for the runs whose budget is the bench's share (4096/32768 = 1/8)
    assert by[("dense", None)]["decode_ms"] == 20.0 and by[("twostage", None)]["decode_ms"] == 16.5
    assert by[("quest", None)]["decode_ms"] == 15.0 and by[("twostage", 0.99)]["decode_ms"] is None
    assert "(twostage eager; quest eager 15.50 ms)" in out   # a bench result from before graph capture
    row = next(line for line in out.splitlines() if line.startswith("| 16 | quest |"))
    cells = [c.strip() for c in row.split("|")]
    assert all(len(c.split(".")[-1].rstrip("%]")) <= 2 for c in cells if "." in c and "[" not in c)  # rounded


def test_wilson_interval_is_the_textbook_one():
    lo, hi = ev.wilson_interval(180, 200)
    assert lo == pytest.approx(0.8506, abs=1e-3) and hi == pytest.approx(0.9343, abs=1e-3)
    assert ev.wilson_interval(0, 20)[0] == 0.0 and ev.wilson_interval(20, 20)[1] == pytest.approx(1.0)


def test_decode_times_say_how_twostage_was_timed():
    """Results since twostage's graph capture time both policies replayed, eager beside."""
    from tinyserve_core.eval.selection.report import attach_decode_times

    bench = {"machine": "NVIDIA H200", "budget": 4096, "block_size": 16, "rows": [
        {"context": 32768, "batch": 64, "dense_ms": 20.0, "quest_ms": 5.0, "twostage_ms": 6.0,
         "quest_eager_ms": 7.5, "twostage_eager_ms": 9.25}]}
    line = attach_decode_times([], bench)
    assert line.endswith("twostage 6.00 ms (both replayed from CUDA graphs; eager: quest 7.50 ms, twostage 9.25 ms)")


def test_the_step_target_is_judged_on_the_benchs_largest_batch_at_32k():
    from tinyserve_core.eval.selection.report import decode_step_target

    rows = [{"context": 32768, "batch": 8, "quest_ms": 1.0, "twostage_ms": 1.1},
            {"context": 32768, "batch": 64, "quest_ms": 2.0, "twostage_ms": 2.5},
            {"context": 4096, "batch": 64, "quest_ms": 1.0, "twostage_ms": 1.0}]
    (v,) = decode_step_target({"machine": "NVIDIA H200", "block_size": 16, "rows": rows})
    assert v["met"] is False and v["value"]["ratio"] == pytest.approx(1.25) and "64 x 32K" in v["target"]
    rows[1]["twostage_ms"] = 2.3
    assert decode_step_target({"rows": rows})[0]["met"] is True
    assert decode_step_target({"rows": rows[2:]}) == []          # no 32K row: nothing judged


# ---- --merge: runs split by block size join into the one run --------------------------

SMALL = ["--budgets", "1/8", "--policies", "quest,twostage", "--top-p", "0.9", "--context", "120",
         "--decode-tokens", "4", "--text-samples", "1", "--passkey-samples", "2", "--passkey-lengths", "100",
         "--dense-layers", "1", "--tier-factors", ""]


def _run(argv) -> int:
    args = build_parser().parse_args(["eval", "selection", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def parts(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("parts")
    for name, blocks in (("whole", "8,16"), ("a", "8"), ("b", "16")):
        assert _run(["--model", str(tiny_model_dir), "--json", str(d / f"{name}.json"),
                     "--block-sizes", blocks, *SMALL]) == 0
    return d


def _strip(rows):  # timing is the only thing a second run may change
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_merged_parts_equal_the_single_run(parts, tmp_path, capsys):
    out, md = tmp_path / "m.json", tmp_path / "m.md"
    assert _run(["--merge", str(parts / "b.json"), str(parts / "a.json"), "--json", str(out), "--md", str(md)]) == 0
    whole = json.loads((parts / "whole.json").read_text())
    merged = json.loads(out.read_text())
    assert _strip(merged["results"]) == _strip(whole["results"])
    assert merged["targets"] == whole["targets"] and merged["spec"] == whole["spec"]
    assert len(merged["part_wall_s"]) == 2 and merged["wall_s"] == max(merged["part_wall_s"])
    assert "2 parts run by block size" in md.read_text()


@pytest.mark.slow
def test_merge_refuses_what_does_not_belong_together(parts, tmp_path):
    with pytest.raises(InputFileError, match="block 8 is also in"):
        _run(["--merge", str(parts / "a.json"), str(parts / "whole.json")])
    doc = json.loads((parts / "a.json").read_text())
    doc["spec"]["passkey_samples"] = 3
    (tmp_path / "other.json").write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match=r"other\.json: spec\.passkey_samples: 3 differs"):
        _run(["--merge", str(parts / "b.json"), str(tmp_path / "other.json")])
    doc = json.loads((parts / "a.json").read_text())
    del doc["results"][0]["mass_recall"]
    (tmp_path / "broken.json").write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match=r"results\[0\]: missing fields \['mass_recall'\]"):
        _run(["--merge", str(tmp_path / "broken.json")])
