"""`tinyserve eval selection` end to end on a tiny random model (built here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinyserve_core.errors import ConfigError
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
                   "--passkey-samples", "2", "--dense-layers", "1"])
    assert args.func(args) == 0
    rep = json.loads(out.read_text())
    rows = rep["results"]
    # block sizes x (dense + 4 policies x 2 budgets + adaptive x 2 budgets x 2 top_p)
    assert len(rows) == 2 * (1 + 4 * 2 + 2 * 2)
    for r in rows:
        assert r["bound_violations"] == 0
        assert 0.0 <= r["mass_recall"] <= r["oracle_mass"] + 1e-6 <= 1.0 + 2e-6 and 0.0 < r["pages_frac"] <= 1.0
        assert r["perplexity"] > 1.0 and r["passkey_accuracy"] is not None
        if r["policy"] == "dense":
            assert r["agreement"] == 1.0 and r["ppl_vs_dense"] == 0.0 and r["pages_frac"] == 1.0
        else:
            assert r["pages_frac"] < 1.0  # 160 tokens: both budgets select a subset
            assert set(r["extra"]["per_layer_mass_recall"]) == {"1", "2"}
    q = next(r for r in rows if r["policy"] == "quest" and r["budget"] == "32" and r["block_size"] == 8)
    assert q["mean_pages"] == pytest.approx(4.0)  # 32 tokens / 8 per page
    targets = {t["target"].split(":")[0] for t in rep["targets"]}
    assert {"quest @1/8", "adaptive", "streaming @1/8", "h2o @1/8", "oracle @1/8"} <= targets
    oracle = next(r for r in rows if r["policy"] == "oracle" and r["budget"] == "1/8" and r["block_size"] == 16)
    quest = next(r for r in rows if r["policy"] == "quest" and r["budget"] == "1/8" and r["block_size"] == 16)
    assert oracle["mass_recall"] >= quest["mass_recall"] - 1e-6  # the best ranking at the same budget
    md = (tmp_path / "r.md").read_text()
    assert "| 16 | quest | 1/8 |" in md and "| 16 | adaptive p=1 | 32 |" in md
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
                       context=96, decode_tokens=5, text_samples=2, passkey_samples=1, top_ps=(1.0,))
    res = ev.evaluate(model, tok, tokens, spec, progress=False)
    dense = res[0]
    for r in res[1:]:
        assert r.perplexity == dense.perplexity and r.agreement == 1.0 and r.mass_recall == pytest.approx(1.0)


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
])
def test_bad_flags_name_the_flag(argv, field):
    with pytest.raises(ConfigError) as e:
        spec_from_args(_parse(argv))
    assert e.value.field == field


def test_a_failed_output_costs_only_itself(tiny_model_dir, tmp_path, capsys):
    """--plots cannot be a folder (a file stands there): the JSON and Markdown are still
    written, the failure is one line and the exit code 1."""
    (tmp_path / "plots").write_text("a file, not a folder")
    args = _parse(["--model", str(tiny_model_dir), "--json", str(tmp_path / "r.json"),
                   "--md", str(tmp_path / "r.md"), "--plots", str(tmp_path / "plots"),
                   "--policies", "quest", "--budgets", "32", "--block-sizes", "8",
                   "--context", "96", "--decode-tokens", "2", "--text-samples", "1",
                   "--passkey-samples", "1", "--dense-layers", "1"])
    assert args.func(args) == 1
    assert json.loads((tmp_path / "r.json").read_text())["results"]
    assert "| quest |" in (tmp_path / "r.md").read_text()
    err = [line for line in capsys.readouterr().err.splitlines() if "not written" in line]
    assert len(err) == 1 and "plots" in err[0]
