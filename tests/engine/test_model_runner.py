"""ModelRunner contract: packed prefill, batched decode, copy-on-write, selection hook,
profiling, bad input. The dense forward of the same model is the oracle (it is itself
checked against transformers in tests/model/test_golden.py)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, PrefillItem, RunnerOutput
from tinyserve_core.errors import ConfigError
from tinyserve_core.kv.kv_cache import KVCache
from tinyserve_core.model import LlamaForCausalLM, ModelConfig

BS = 4
TOL = 1e-5


def tiny_model(seed=0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2), **overrides})
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)
    return m


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def dense_last(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_dense(torch.tensor([ids], device=model.lm_head.weight.device))[0, -1]


def toks(n, seed):
    return torch.randint(0, 97, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_packed_prefill_equals_dense_per_sequence(model):
    runner = ModelRunner(model, 32, BS)
    seqs = [toks(3, 1), toks(9, 2), toks(1, 3), toks(16, 4)]
    tables = [[0], [5, 2, 7], [9], [1, 3, 4, 6]]
    logits = runner.prefill([PrefillItem(i, s, 0, t) for i, (s, t) in enumerate(zip(seqs, tables))]).logits
    assert logits.shape == (4, 97) and logits.dtype == torch.float32
    for i, s in enumerate(seqs):
        assert torch.allclose(logits[i], dense_last(model, s), atol=TOL)
    # The cache holds exactly what was computed: sequence 1's 9th token sits in block 7, slot 0.
    k_new = runner.kv.k_caches[0][7, 0]
    assert torch.count_nonzero(k_new) > 0 and torch.count_nonzero(runner.kv.k_caches[0][7, 1:]) == 0


def test_decode_batch_matches_dense_and_is_order_free(model):
    runner = ModelRunner(model, 32, BS)
    seqs = [toks(6, 5), toks(11, 6), toks(2, 7)]
    tables = [[3, 8], [0, 1, 2], [4]]
    runner.prefill([PrefillItem(i, s[:-1], 0, t) for i, (s, t) in enumerate(zip(seqs, tables))])
    items = [DecodeItem(i, s[-1], len(s) - 1, t) for i, (s, t) in enumerate(zip(seqs, tables))]
    logits = runner.decode(items).logits
    for i, s in enumerate(seqs):
        assert torch.allclose(logits[i], dense_last(model, s), atol=TOL)
    again = runner.decode(items[::-1]).logits  # rewrites the same slots with the same values
    assert torch.allclose(again, logits.flip(0), atol=TOL)


def test_copy_on_write_keeps_forked_sequences_apart(model):
    """Parent and child share a half-full block; the child's append goes to a copy."""
    runner = ModelRunner(model, 16, BS)
    prompt = toks(6, 8)
    runner.prefill([PrefillItem(0, prompt, 0, [2, 5])])
    runner.copy_blocks([(5, 9)])  # the scheduler's CoW pair for the shared last block
    for layer in range(2):
        assert torch.equal(runner.kv.k_caches[layer][9], runner.kv.k_caches[layer][5])
        assert torch.equal(runner.kv.metas[layer][9], runner.kv.metas[layer][5])
    a, b = prompt + [11], prompt + [42]
    logits = runner.decode([DecodeItem(0, 11, 6, [2, 5]), DecodeItem(1, 42, 6, [2, 9])]).logits
    assert torch.allclose(logits[0], dense_last(model, a), atol=TOL)
    assert torch.allclose(logits[1], dense_last(model, b), atol=TOL)


def test_page_metadata_bounds_every_stored_key(model):
    runner = ModelRunner(model, 16, BS)
    s = toks(10, 9)
    runner.prefill([PrefillItem(0, s[:7], 0, [4, 1, 6])])
    runner.decode([DecodeItem(0, s[7], 7, [4, 1, 6])])
    for layer in range(2):
        k, meta = runner.kv.k_caches[layer], runner.kv.metas[layer]
        for block, n in ((4, 4), (1, 4), (6, 0)):
            if n == 0:
                continue
            assert torch.equal(meta[block, 0], k[block, :n].amin(0))
            assert torch.equal(meta[block, 1], k[block, :n].amax(0))


class RecordingSelector:
    def __init__(self, choose=None):
        self.calls = []
        self.choose = choose

    def select(self, layer, query, kv, layer_idx, block_tables, seq_lens, seq_ids):
        self.calls.append((layer, tuple(query.shape), kv, layer_idx, block_tables.clone(), seq_lens.clone(), list(seq_ids)))
        return None if self.choose is None else self.choose(layer_idx, block_tables, seq_lens, kv.num_kv_heads)


def _decode_with(model, selector):
    runner = ModelRunner(model, 32, BS, selector=selector)
    seqs = [toks(13, 10), toks(7, 11)]
    tables = [[0, 1, 2, 3], [4, 5]]
    runner.prefill([PrefillItem(10 + i, s[:-1], 0, t) for i, (s, t) in enumerate(zip(seqs, tables))])
    return runner, runner.decode([DecodeItem(10 + i, s[-1], len(s) - 1, t)
                                  for i, (s, t) in enumerate(zip(seqs, tables))]).logits


def test_selector_hook_called_per_layer_with_contract_arguments(model):
    sel = RecordingSelector()
    runner, logits = _decode_with(model, sel)
    _, dense = _decode_with(model, None)
    assert torch.equal(logits, dense)  # None means dense
    assert [c[3] for c in sel.calls] == [0, 1]
    layer, qshape, kv, _, tables, lens, ids = sel.calls[0]
    assert layer is model.model.layers[0].self_attn and kv is runner.kv
    assert qshape == (2, 4, 16) and lens.tolist() == [13, 7] and ids == [10, 11]
    assert tables.dtype == torch.int32 and tables[0].tolist() == [0, 1, 2, 3]


def test_selecting_every_page_equals_dense_and_fewer_pages_differ(model):
    def all_pages(layer_idx, tables, lens, hkv):
        return torch.arange(tables.shape[1], dtype=torch.int32).expand(tables.shape[0], hkv, -1).contiguous()

    def last_page(layer_idx, tables, lens, hkv):
        last = ((lens.long() - 1) // BS).to(torch.int32)
        return last.view(-1, 1, 1).expand(-1, hkv, 1).contiguous()

    _, dense = _decode_with(model, None)
    _, full = _decode_with(model, RecordingSelector(all_pages))
    _, sparse = _decode_with(model, RecordingSelector(last_page))
    assert torch.allclose(full, dense, atol=TOL)
    assert not torch.allclose(sparse, dense, atol=1e-3)


def test_profile_records_op_families_only_when_on(model):
    runner = ModelRunner(model, 16, BS)
    out = runner.prefill([PrefillItem(0, toks(5, 12), 0, [0, 1])])
    assert isinstance(out, RunnerOutput) and out.timings == {} and out.bytes_moved == {}
    assert out.logits.shape == (1, model.config.vocab_size) and out.logits.dtype == torch.float32
    runner.profile = True
    out = runner.decode([DecodeItem(0, 3, 5, [0, 1])])
    assert out.timings == {} and out.bytes_moved == {}   # read after the step's sync: finish()
    out.finish()
    t = out.timings
    assert {"attention", "cache_write", "matmul", "total", "other"} <= set(t)
    assert all(v >= 0 for v in t.values()) and t["total"] > 0
    assert t["attention"] + t["cache_write"] + t["matmul"] <= t["total"] * 1.0001
    assert {"attention", "cache_write", "matmul"} <= set(out.bytes_moved)
    assert all(b > 0 for b in out.bytes_moved.values())


def test_profiling_does_not_change_logits(model):
    plain, profiled = ModelRunner(model, 16, BS), ModelRunner(model, 16, BS, profile=True)
    for r in (plain, profiled):
        r.prefill([PrefillItem(0, toks(5, 12), 0, [0, 1])])
    a = plain.decode([DecodeItem(0, 3, 5, [0, 1])]).logits
    b = profiled.decode([DecodeItem(0, 3, 5, [0, 1])]).logits
    assert torch.equal(a, b)


class FakeGraphs:
    """Stands in for DecodeGraphs on the CPU: a replay that times itself as a whole."""

    def __init__(self, vocab):
        self.vocab, self.replays = vocab, 0

    def run(self, items, sel_key, selector, timer=None, span=None, check=None):
        self.replays += 1
        with timer("total") if timer is not None else contextlib.nullcontext():
            return torch.zeros(len(items), self.vocab)


@pytest.mark.parametrize("profile", [False, True])
def test_profiling_keeps_graph_replays_and_samples_the_breakdown(model, monkeypatch, profile):
    """Profiling must not switch graphs off: a replayed step reports only its "total";
    the first and then every profile_every-th graph step runs eagerly for the per-op
    breakdown (and its bytes)."""
    runner = ModelRunner(model, 16, BS, profile=profile, profile_every=4, profile_budget=0.0)
    fake = runner._graphs = FakeGraphs(model.config.vocab_size)
    monkeypatch.setattr(runner, "_graph_key", lambda: "no selector")
    runner.prefill([PrefillItem(0, toks(5, 12), 0, [0, 1])])
    eager_steps, kinds = [], []
    for step in range(9):
        out = runner.decode([DecodeItem(0, 3, 5 + step, [0, 1, 2, 3])]).finish()
        if "attention" in out.timings:
            eager_steps.append(step)
            assert out.bytes_moved["attention"] > 0 and out.logits.abs().sum() > 0
        else:
            kinds.append(set(out.timings))
            assert out.bytes_moved == {}
    if profile:
        assert eager_steps == [0, 4, 8] and fake.replays == 6
        assert all(k == {"total"} for k in kinds)
    else:
        assert eager_steps == [] and fake.replays == 9 and all(k == set() for k in kinds)


def test_profile_every_must_be_positive(model):
    with pytest.raises(ValueError, match="profile_every"):
        ModelRunner(model, 16, BS, profile_every=0)


def test_prefix_hit_reads_cached_pages(model):
    runner = ModelRunner(model, 16, BS)
    a = toks(9, 13)
    runner.prefill([PrefillItem(0, a, 0, [7, 3, 12])])
    b = a[:8] + toks(5, 14)
    logits = runner.prefill([PrefillItem(1, b, 8, [7, 3, 0, 1])]).logits
    assert torch.allclose(logits[0], dense_last(model, b), atol=TOL)


def test_chunked_prefill_continues_inside_a_block(model):
    """num_cached need not be a block multiple (chunked prefill): the second chunk
    starts mid-page and the page bounds cover both chunks' keys."""
    runner = ModelRunner(model, 16, BS)
    s = toks(15, 15)
    runner.prefill([PrefillItem(0, s[:6], 0, [9, 2])])
    logits = runner.prefill([PrefillItem(0, s, 6, [9, 2, 5, 11])]).logits
    assert torch.allclose(logits[0], dense_last(model, s), atol=TOL)
    k, meta = runner.kv.k_caches[1], runner.kv.metas[1]
    assert torch.equal(meta[2, 0], k[2].amin(0)) and torch.equal(meta[11, 1], k[11, :3].amax(0))


def test_bad_items_rejected(model):
    runner = ModelRunner(model, 8, BS)
    with pytest.raises(ValueError, match="num_cached"):
        runner.prefill([PrefillItem(0, [1, 2, 3], 3, [0])])
    with pytest.raises(ValueError, match="block table"):
        runner.prefill([PrefillItem(0, toks(9, 1), 0, [0, 1])])
    with pytest.raises(ValueError, match="block table"):
        runner.decode([DecodeItem(0, 1, 4, [0])])


def test_kv_cache_sizes_and_validation():
    kv = KVCache(num_layers=3, num_blocks=10, block_size=16, num_kv_heads=2, head_dim=8, dtype=torch.float16)
    assert kv.k_caches[0].shape == (10, 16, 2, 8) and kv.metas[2].shape == (10, 2, 2, 8)
    assert kv.bytes_per_block == 3 * (2 * 16 * 2 * 8 + 2 * 2 * 8) * 2
    assert kv.total_bytes == 10 * kv.bytes_per_block
    with pytest.raises(ConfigError, match="block_size"):
        KVCache(1, 4, 12, 1, 8)
    with pytest.raises(ConfigError, match="num_blocks"):
        KVCache(1, 0, 16, 1, 8)
    with pytest.raises(ValueError, match="out of range"):
        kv.copy_blocks([(0, 10)])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.bfloat16, 0.15)])
def test_runner_on_cuda_matches_dense(dtype, tol):
    model = tiny_model().to("cuda", dtype)
    # budget 0: the fixed cadence, whose first graph step is a breakdown sample (with a
    # budget the first samples wait for the replays to pay for them)
    runner = ModelRunner(model, 32, BS, device="cuda", dtype=dtype, profile_budget=0.0)
    seqs = [toks(9, 20), toks(14, 21)]
    tables = [[3, 7, 1], [0, 2, 4, 6]]
    runner.prefill([PrefillItem(i, s[:-1], 0, t) for i, (s, t) in enumerate(zip(seqs, tables))])
    runner.profile = True   # the first profiled decode step takes the per-op breakdown
    out = runner.decode([DecodeItem(i, s[-1], len(s) - 1, t) for i, (s, t) in enumerate(zip(seqs, tables))]).finish()
    logits = out.logits
    assert logits.device.type == "cuda" and logits.dtype == torch.float32
    assert out.timings["total"] > 0 and out.timings["attention"] > 0
    for i, s in enumerate(seqs):
        ref = dense_last(model, s).float()
        assert (logits[i] - ref).abs().max().item() < tol * max(1.0, ref.abs().max().item())


def test_profiled_bytes_count_the_selected_tokens_of_a_batch(tiny_model_dir):
    """Profiling reports the bytes each op family moves; sparse layers count only the
    tokens of the pages the selector kept (a ragged batch, the last page partly full)."""
    from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, PrefillItem
    from tinyserve_core.model.loader import load_model

    class KeepFirstAndLast:
        def select(self, layer, query, kv, layer_idx, block_tables, seq_lens, seq_ids):
            last = (seq_lens.long() - 1) // kv.block_size
            pages = torch.stack([torch.zeros_like(last), last], dim=1)[:, None, :]
            return pages.expand(-1, kv.k_caches[0].shape[2], -1).to(torch.int32).contiguous()

    model, _ = load_model(str(tiny_model_dir))
    runner = ModelRunner(model, num_blocks=32, block_size=4, selector=KeepFirstAndLast())
    lens = [10, 7]  # after decode: contexts of 11 and 8 tokens
    tables = [[0, 1, 2], [3, 4]]
    runner.prefill([PrefillItem(i, list(range(1, n + 1)), 0, t) for i, (n, t) in enumerate(zip(lens, tables))])
    runner.profile = True
    out = runner.decode([DecodeItem(0, 5, 10, tables[0]), DecodeItem(1, 5, 7, tables[1])]).finish()
    cfg = model.config
    token_kv = 2 * cfg.num_key_value_heads * cfg.head_dim * 4
    # seq 0: page 0 (4 tokens) + page 2 (3 of 4 slots filled); seq 1: page 0 (4) + page 1 (4)
    assert out.bytes_moved["attention"] == cfg.num_hidden_layers * (7 + 8) * token_kv
    assert out.bytes_moved["cache_write"] == cfg.num_hidden_layers * 2 * token_kv
    assert out.timings["attention"] > 0
