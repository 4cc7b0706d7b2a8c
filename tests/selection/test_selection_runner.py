"""The selector inside the real paged decode path (ModelRunner, tiny random model)."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, PrefillItem
from tinyserve_core.model.config import ModelConfig
from tinyserve_core.model.llama import LlamaForCausalLM
from tinyserve_core.selection import PageSelector


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    return LlamaForCausalLM(cfg)


def _decode_logits(model, selector, lens=(300, 77), steps=4, block_size=8):
    g = torch.Generator().manual_seed(1)
    runner = ModelRunner(model, 128, block_size, selector=selector)
    tables, at, prompts = [], 0, []
    for L in lens:
        n = -(-(L + steps) // block_size)
        tables.append(list(range(at, at + n)))
        at += n
        prompts.append(torch.randint(0, 97, (L + steps,), generator=g).tolist())
    for i, p in enumerate(prompts):
        runner.prefill([PrefillItem(i, p[:lens[i]], 0, tables[i])])
    out = []
    for s in range(steps):
        items = [DecodeItem(i, p[lens[i] + s - 1], lens[i] + s - 1, tables[i]) for i, p in enumerate(prompts)]
        out.append(runner.decode(items).logits)
    return torch.stack(out)


def test_dense_and_full_budget_equal_the_plain_engine_exactly(model):
    plain = _decode_logits(model, None)
    assert torch.equal(_decode_logits(model, PageSelector("dense")), plain)
    for name, extra in (("quest", {}), ("adaptive", {"top_p_mass": 1.0}), ("streaming", {}), ("h2o", {}),
                        ("oracle", {})):
        sel = PageSelector(name, budget=1.0, dense_layers=0, **extra)
        assert torch.equal(_decode_logits(model, sel), plain), name


def test_sparse_selection_changes_logits_and_reports_every_head(model):
    plain = _decode_logits(model, None)
    sel = PageSelector("quest", budget=32, dense_layers=1, stats=True)
    sparse = _decode_logits(model, sel)
    assert not torch.allclose(sparse, plain)
    # the runner queued the copies; the records come when collected
    assert sel.collect(keep_newest=True) == []   # all four issued since the last collect: in flight
    got = sel.collect()
    assert [s.step for s in got] == [0, 1, 2, 3]
    for s in got:
        d = s.detail
        assert d.per_head.shape[:3] == (2, 2, 2)  # selected layers x sequences x kv-heads
        assert d.layers.tolist() == [1, 2] and not d.channel("bound_violations").any()
        assert (d.channel("pages_selected") == 4).all() and (d.selected.sum(-1) == 4).all()  # 32 tokens / block 8
