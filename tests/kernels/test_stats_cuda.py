"""The selection-statistics kernel (csrc/kernels/selection_stats.cuh) against its torch spec
(kernels/stats_reference.py) on the same GPU tensors: random non-zero caches with NaN in
every slot no context token holds (a kernel reading past a context shows it), block tables
shuffled and padded with -1, outputs poisoned first; over an FP8 cache the spec is
fp8_reference.selection_stats (the dequantised cache). Runs only with a GPU (`pytest -m cuda`).

What must match exactly: the integer channels (pages selected, context pages, bound
violations), the passthroughs (entropy, budget), and the selected, score and candidate
planes. The oracle plane and selection recall too, except on rows whose k-th and (k+1)-th
page masses (in the spec's order) lie within NEAR_TIE of each other without being equal:
the kernel sums each page's softmax from per-page logsumexps and its dot products in
another order, so its masses differ from torch's by ~1e-6 relative, and such a pair may
swap; those rows (counted in the messages) must still agree on the oracle's size and, within
MASS_TOL, its mass. Exact ties (identical pages) must break as the spec does: lower page
first. Mass recall and oracle mass: sums of at most 2048 float32 masses in another order,
each mass off by ~1e-6 relative: MASS_TOL = 1e-4 absolute + relative."""

from __future__ import annotations

import math

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import reference, stats_reference as sr

from .test_kernels_cuda import DEV

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SCALE = 0.125
NEAR_TIE = 1e-4   # relative gap between the k-th and (k+1)-th mass that may swap
MASS_TOL = 1e-4
EXACT = {"pages_selected": 0, "context_pages": 1, "bound_violations": 5, "entropy": 6, "budget_pages": 7}


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    """The spec's logits are a float32 einsum: TF32 (10-bit mantissas) would be the spec's error, not the kernel's."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def _poison(value: float = -12345.0, nbytes: int = 64 << 20) -> None:
    """Fill freed cached memory with `value`: an output element the kernel does not write shows it."""
    x = torch.full((nbytes // 4,), value, device=DEV)
    del x


def _case(lens, G, D, bs, dtype, gen, H=2, integer=False):
    """query [B, H*G, D], k_cache and meta written through the reference op (NaN in every
    other slot), block tables [B, M] of shuffled blocks padded with -1, seq_lens."""
    B, pages = len(lens), [math.ceil(L / bs) for L in lens]
    nb = sum(pages) + 2
    perm = torch.randperm(nb, device=DEV, generator=gen).to(torch.int32)
    kc = torch.full((nb, bs, H, D), float("nan"), dtype=dtype, device=DEV)
    vc = torch.zeros_like(kc)
    meta = torch.full((nb, 2, H, D), float("nan"), dtype=dtype, device=DEV)
    bt = torch.full((B, max(pages)), -1, dtype=torch.int32, device=DEV)

    def draw(shape, scale):
        if integer:   # small integers: every dot product exact in float32, whatever the order
            return torch.randint(-3, 4, shape, device=DEV, generator=gen).to(dtype)
        return (torch.randn(shape, device=DEV, generator=gen) * scale + 0.2).to(dtype)

    at = 0
    for b, (L, n) in enumerate(zip(lens, pages)):
        bt[b, :n] = perm[at:at + n]
        at += n
        pos = torch.arange(L, device=DEV)
        slots = bt[b, pos // bs].long() * bs + pos % bs
        reference.reshape_and_cache(draw((L, H, D), 1.5), draw((L, H, D), 1.0), kc, vc, meta, slots)
    q = draw((B, H * G, D), 2.0)
    return q, kc, meta, bt, torch.tensor(lens, dtype=torch.int32, device=DEV)


def _page_lists(lens, bs, H, width, gen, empty_row=True):
    """int32 [B, H, width]: per row a random subset of its pages in random order, -1 pad and
    one page listed twice; row (0, 0) lists none when `empty_row`."""
    out = torch.full((len(lens), H, width), -1, dtype=torch.int32, device=DEV)
    for b, L in enumerate(lens):
        n = math.ceil(L / bs)
        for h in range(H):
            s = int(torch.randint(0, min(n, width - 1) + 1, (1,), generator=gen, device=DEV))
            if empty_row and b == h == 0:
                s = 0
            perm = torch.randperm(n, device=DEV, generator=gen).to(torch.int32)
            out[b, h, :s] = perm[:s]
            if 0 < s < width:
                out[b, h, s] = perm[0]
    return out


def _policy(mode, lens, bs, H, M, gen):
    """(page_indices, candidates, entropy, budget) of a dense, sparse or two-stage policy."""
    B = len(lens)
    if mode == "dense":
        return None, None, None, None
    pi = _page_lists(lens, bs, H, M // 2 + 2, gen)
    if mode == "sparse":   # the top-pages policies: an int64 budget per sequence, broadcast
        budget = torch.randint(1, 50, (B, 1), device=DEV, generator=gen).expand(B, H)
        return pi, None, torch.rand(B, H, device=DEV, generator=gen) * 3, budget
    cand = _page_lists(lens, bs, H, M, gen, empty_row=False)
    return pi, cand, None, torch.rand(B, H, device=DEV, generator=gen) * 40


def _kernel(*args, **kw):
    """The CUDA op itself (never its fallback to the reference)."""
    from tinyserve_core.kernels import _cuda_stats
    q, kc, meta, bt = args[:4]
    why = _cuda_stats._unsupported(q, kc, meta, bt.shape[1])
    assert why is None, f"the kernel does not take this case: {why}"
    _poison()
    return _cuda_stats.selection_stats(*args, **kw)


def _spec_mass(q, kc, bt, sl):
    logits = sr.paged_logits(q, kc, bt, sl, SCALE)
    B, H, G, T = logits.shape
    bs = kc.shape[1]
    return torch.softmax(logits, dim=-1).view(B, H, G, T // bs, bs).sum(-1).mean(2)


def _near_ties(mass, n, k):
    """bool [B, H]: rows whose k-th and (k+1)-th masses (descending) are within NEAR_TIE but unequal."""
    B, H, M = mass.shape
    valid = torch.arange(M, device=DEV)[None, None, :] < n[:, None, None]
    s = mass.masked_fill(~valid, -1.0).sort(dim=-1, descending=True).values
    kk = k.clamp(1, M - 1)[..., None]
    a, b = s.gather(-1, kk - 1)[..., 0], s.gather(-1, kk)[..., 0]
    inside = (k > 0) & (k < n[:, None])
    return inside & (a != b) & (a - b <= NEAR_TIE * a.abs())


def _check(got, want, mass, n, label):
    M = (want.shape[-1] - sr.C) // sr.PLANES
    C = sr.C
    assert got.shape == want.shape, f"{label}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert not (got == -12345.0).any(), f"{label}: unwritten output elements"
    for name, c in EXACT.items():
        torch.testing.assert_close(got[..., c], want[..., c], rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m, name=name: f"{label}: channel {name}: {m}")
    for plane, sl in (("selected", slice(C, C + M)), ("scores", slice(C + 2 * M, C + 3 * M)),
                      ("candidates", slice(C + 3 * M, C + 4 * M))):
        torch.testing.assert_close(got[..., sl], want[..., sl], rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m, plane=plane: f"{label}: {plane} plane: {m}")
    for name, c in (("mass_recall", 2), ("oracle_mass", 3)):
        torch.testing.assert_close(got[..., c], want[..., c], rtol=MASS_TOL, atol=MASS_TOL, equal_nan=True,
                                   msg=lambda m, name=name: f"{label}: channel {name}: {m}")
    k = want[..., 0].long()
    near = _near_ties(mass, n, k)
    oracle_g, oracle_w = got[..., C + M:C + 2 * M], want[..., C + M:C + 2 * M]
    differ = (oracle_g != oracle_w).any(-1)
    bad = differ & ~near
    assert not bad.any(), (f"{label}: oracle plane differs on {int(bad.sum())} of {bad.numel()} rows "
                           f"(first at {bad.nonzero()[0].tolist()}) that are no near-ties "
                           f"({int(near.sum())} near-tie rows)")
    assert torch.equal(oracle_g.sum(-1), oracle_w.sum(-1)), f"{label}: oracle sizes differ"
    rec_g, rec_w = got[..., 4], want[..., 4]
    assert torch.equal(rec_g[~near], rec_w[~near]), f"{label}: selection recall differs off near-ties"
    assert ((rec_g - rec_w).abs()[near] <= 1.0 / k.clamp(min=1)[near] + 1e-6).all(), \
        f"{label}: selection recall off by more than one page on a near-tie"


@pytest.mark.parametrize("dtype", DTYPES)
# groups below their instance's bound (3 of 4, 6 of 8) leave lanes that follow no head
@pytest.mark.parametrize("G,D,bs", [(1, 64, 16), (4, 64, 16), (4, 128, 32), (1, 128, 32), (2, 128, 16),
                                    (3, 64, 32), (6, 64, 16), (8, 64, 16)])
@pytest.mark.parametrize("mode", ["dense", "sparse", "twostage"])
def test_kernel_matches_the_spec(cuda_ops, gen, dtype, G, D, bs, mode):
    lens = [1, bs, 3 * bs, 5 * bs + 7, 399, int(torch.randint(2, 600, (1,), generator=gen, device=DEV))]
    q, kc, meta, bt, sl = _case(lens, G, D, bs, dtype, gen)
    H, M = kc.shape[2], bt.shape[1]
    scores = reference.page_scores(q, meta, bt, sl, SCALE, bs)
    args = (q, kc, meta, bt, sl, SCALE, scores, *_policy(mode, lens, bs, H, M, gen), 1e-5)
    want = sr.selection_stats(*args)
    got = _kernel(*args)
    n = (sl.long() + bs - 1) // bs
    _check(got, want, _spec_mass(q, kc, bt, sl), n, f"{dtype} G={G} D={D} bs={bs} {mode}")
    assert (got[..., 5] == 0).all(), "the Quest bound is exact: no violations on true page scores"


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
@pytest.mark.parametrize("G", [4, 8])
def test_kernel_matches_the_spec_at_2048_pages(cuda_ops, gen, dtype, G):
    """32K-token contexts at block 16: the bitonic sort over 2048 pages; G = 8 needs more than
    48 KB of shared memory (the opt-in path)."""
    bs = 16
    lens = [2048 * bs, 2048 * bs - 5, 1, 777]
    q, kc, meta, bt, sl = _case(lens, G, 128, bs, dtype, gen)
    H, M = kc.shape[2], bt.shape[1]
    assert M == 2048
    scores = reference.page_scores(q, meta, bt, sl, SCALE, bs)
    args = (q, kc, meta, bt, sl, SCALE, scores, *_policy("sparse", lens, bs, H, M, gen), 1e-5)
    n = (sl.long() + bs - 1) // bs
    _check(_kernel(*args), sr.selection_stats(*args), _spec_mass(q, kc, bt, sl), n, f"{dtype} G={G} M=2048")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("G", [1, 4])
def test_bound_violations_counted_exactly(cuda_ops, gen, dtype, G):
    """Integer keys and queries (exact logits) against scores half a step between logit
    values, so every comparison is clear-cut: the counts must be equal and not zero (2,000
    tokens: 125 pages, two chunks of the pages kernel to sum)."""
    bs = 16
    lens = [1, 16, 100, 257, 2000]
    q, kc, meta, bt, sl = _case(lens, G, 64, bs, dtype, gen, integer=True)
    B, H, M = len(lens), kc.shape[2], bt.shape[1]
    scores = (torch.randint(-12, 12, (B, H, M), device=DEV, generator=gen).float() + 0.5) * SCALE
    reference.mask_pages_past_context(scores, sl, bs)
    args = (q, kc, meta, bt, sl, SCALE, scores, *_policy("sparse", lens, bs, H, M, gen), 1e-5)
    want, got = sr.selection_stats(*args), _kernel(*args)
    assert want[..., 5].sum() > 0, "the test needs violations to count"
    torch.testing.assert_close(got[..., 5], want[..., 5], rtol=0, atol=0, msg=lambda m: f"violations: {m}")
    n = (sl.long() + bs - 1) // bs
    _check(got, want, _spec_mass(q, kc, bt, sl), n, f"{dtype} G={G} integer data, low scores")


@pytest.mark.parametrize("dtype", DTYPES)
def test_tied_pages_break_ties_like_the_spec(cuda_ops, gen, dtype):
    """Every full page but the last of each context is one physical block (equal masses,
    bit for bit): the oracle takes the lowest tied pages, in the spec and the kernel."""
    bs, lens, H = 16, [16 * 40, 16 * 33 + 5, 16 * 7], 2
    q, kc, meta, bt, sl = _case(lens, 4, 64, bs, dtype, gen, integer=True)
    for b, L in enumerate(lens):
        bt[b, 1:math.ceil(L / bs) - 1] = bt[b, 0]
    M = bt.shape[1]
    scores = reference.page_scores(q, meta, bt, sl, SCALE, bs)
    pi = _page_lists(lens, bs, H, M, gen, empty_row=False)
    args = (q, kc, meta, bt, sl, SCALE, scores, pi, None, None, None, 1e-5)
    want, got = sr.selection_stats(*args), _kernel(*args)
    C = sr.C
    oracle_w = want[..., C + M:C + 2 * M]
    torch.testing.assert_close(got[..., C + M:C + 2 * M], oracle_w, rtol=0, atol=0,
                               msg=lambda m: f"oracle plane on tied pages: {m}")
    mass = _spec_mass(q, kc, bt, sl)
    for b, L in enumerate(lens):
        n = math.ceil(L / bs)
        for h in range(H):
            k = int(want[b, h, 0])
            tied_in = oracle_w[b, h, :n - 1].nonzero().flatten().tolist()
            # the tied pages the oracle keeps are the lowest ones
            assert tied_in == list(range(len(tied_in))), f"row {b},{h}: tied pages {tied_in} (k={k})"
            assert len(tied_in) >= min(k, n - 1) - 1, f"row {b},{h}: {len(tied_in)} tied pages for k={k}"
            assert bool((mass[b, h, 1:n - 1] == mass[b, h, 0]).all()), "premise: the spec's tied masses are equal"


def test_two_launches_captured_in_a_cuda_graph_replay_new_inputs(cuda_ops, gen):
    """The op is two kernel launches for the engine's tensors (the pages, then the rows), and a
    graph captured on static buffers gives the spec's answer for inputs copied in after the
    capture."""
    bs, G, D = 16, 4, 64
    lens = [300, 45, 170, 16]
    q, kc, meta, bt, sl = _case(lens, G, D, bs, torch.float16, gen)
    H, M = kc.shape[2], bt.shape[1]
    scores = reference.page_scores(q, meta, bt, sl, SCALE, bs)
    pi, _, ent, budget = _policy("sparse", lens, bs, H, M, gen)
    call = lambda: kernels.selection_stats(q, kc, meta, bt, sl, SCALE, scores, pi, None, ent, budget)  # noqa: E731
    call()   # warm: builds, sets the shared-memory attribute
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    launched = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                and not e.name.startswith("Activity Buffer")]   # CUPTI's own bookkeeping
    assert len(launched) == 2 and "stats_pages_kernel" in launched[0] and "selection_stats_kernel" in launched[1], \
        f"kernels launched: {launched}"

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    new_lens = [299, 44, 1, 16]   # within the written tokens: slots past them hold NaN
    q.copy_((torch.randn(q.shape, device=DEV, generator=gen) * 2).to(q.dtype))
    sl.copy_(torch.tensor(new_lens, dtype=torch.int32))
    scores.copy_(reference.page_scores(q, meta, bt, sl, SCALE, bs))
    pi.copy_(_page_lists(new_lens, bs, H, pi.shape[-1], gen))
    graph.replay()
    torch.cuda.synchronize()
    want = sr.selection_stats(q, kc, meta, bt, sl, SCALE, scores, pi, None, ent, budget)
    n = (sl.long() + bs - 1) // bs
    _check(out.clone(), want, _spec_mass(q, kc, bt, sl), n, "graph replay")


def _fp8(kc, meta):
    """(codes, bounds, kv_scales) of `_case`'s cache as an FP8 cache: one power-of-two scale a
    (page, kv-head) from its written values, NaN codes where `kc` holds NaN (no context token)
    and NaN scales on pages no table lists, so a kernel reading past a context still shows it.
    The bounds quantise to the min / max of the codes (rounding is monotone): exact."""
    from tinyserve_core.kernels import fp8_reference as f8

    written = kc.float().nan_to_num(nan=0.0)
    scale = f8.pow2_scale(written.abs().amax(dim=(1, 3)))
    unused = kc.float().isnan().all(dim=3).all(dim=1)            # [NB, Hkv]: no slot written
    scale = scale.masked_fill(unused, float("nan"))
    codes = f8.quantize(kc, scale[:, None, :, None]).view(f8.FP8)
    bounds = f8.quantize(meta, scale[:, None, :, None]).view(f8.FP8)
    # the V scale is never read here: NaN, so a kernel reading it for the K scale shows it
    kv_scales = torch.stack([scale, torch.full_like(scale, float("nan"))], dim=1).contiguous()
    return codes, bounds, kv_scales


def _fp8_spec(q, kc8, meta8, sc, bt, sl, *rest):
    from tinyserve_core.kernels import fp8_reference as f8

    return f8.selection_stats(q, kc8, meta8, sc, bt, sl, *rest)


def _fp8_mass(q, kc8, sc, bt, sl):
    from tinyserve_core.kernels import fp8_reference as f8

    return _spec_mass(q, f8.dequantize_cache(kc8, sc, 0), bt, sl)


@pytest.mark.parametrize("G,D,bs", [(1, 64, 16), (4, 64, 16), (4, 128, 32), (8, 128, 16), (2, 128, 16),
                                    (3, 64, 16), (6, 128, 16), (8, 64, 16)])
@pytest.mark.parametrize("mode", ["dense", "sparse", "twostage"])
def test_fp8_kernel_matches_the_spec(cuda_ops, gen, G, D, bs, mode):
    """An FP8 cache's codes and bounds read by the kernel (times the page K scale) against the
    spec over the dequantised cache (fp8_reference.selection_stats), with the FP8 scorer's
    page bounds: no violations, the rest as for 16-bit caches."""
    from tinyserve_core.kernels import fp8_reference as f8

    lens = [1, bs, 3 * bs, 5 * bs + 7, 399, int(torch.randint(2, 600, (1,), generator=gen, device=DEV))]
    q, kc, meta, bt, sl = _case(lens, G, D, bs, torch.float16, gen)
    kc8, meta8, sc = _fp8(kc, meta)
    H, M = kc.shape[2], bt.shape[1]
    scores = f8.page_scores(q, meta8, sc, bt, sl, SCALE, bs)
    rest = (SCALE, scores, *_policy(mode, lens, bs, H, M, gen), 1e-5)
    want = _fp8_spec(q, kc8, meta8, sc, bt, sl, *rest)
    got = _kernel(q, kc8, meta8, bt, sl, *rest, kv_scales=sc)
    n = (sl.long() + bs - 1) // bs
    _check(got, want, _fp8_mass(q, kc8, sc, bt, sl), n, f"fp8 G={G} D={D} bs={bs} {mode}")
    assert (got[..., 5] == 0).all(), "the code bounds are exact: no violations on their page scores"


@pytest.mark.parametrize("G", [4, 8])
def test_fp8_kernel_matches_the_spec_at_2048_pages(cuda_ops, gen, G):
    bs = 16
    lens = [2048 * bs, 2048 * bs - 5, 1, 777]
    q, kc, meta, bt, sl = _case(lens, G, 128, bs, torch.float16, gen)
    kc8, meta8, sc = _fp8(kc, meta)
    del kc, meta
    H, M = kc8.shape[2], bt.shape[1]
    from tinyserve_core.kernels import fp8_reference as f8

    scores = f8.page_scores(q, meta8, sc, bt, sl, SCALE, bs)
    rest = (SCALE, scores, *_policy("sparse", lens, bs, H, M, gen), 1e-5)
    n = (sl.long() + bs - 1) // bs
    _check(_kernel(q, kc8, meta8, bt, sl, *rest, kv_scales=sc), _fp8_spec(q, kc8, meta8, sc, bt, sl, *rest),
           _fp8_mass(q, kc8, sc, bt, sl), n, f"fp8 G={G} M=2048")


@pytest.mark.parametrize("G", [1, 4])
def test_fp8_bound_violations_counted_exactly(cuda_ops, gen, G):
    """Integer keys in -3..3 are exact e4m3 codes under their power-of-two scales: the
    dequantised logits are exact and the counts must equal the spec's (and not be zero; 2,000
    tokens: two chunks of the pages kernel)."""
    bs = 16
    lens = [1, 16, 100, 257, 2000]
    q, kc, meta, bt, sl = _case(lens, G, 64, bs, torch.float16, gen, integer=True)
    kc8, meta8, sc = _fp8(kc, meta)
    from tinyserve_core.kernels import fp8_reference as f8

    assert torch.equal(f8.dequantize_cache(kc8, sc, 0).nan_to_num(nan=7.0), kc.float().nan_to_num(nan=7.0)), \
        "premise: the integer keys quantise exactly"
    B, H, M = len(lens), kc.shape[2], bt.shape[1]
    scores = (torch.randint(-12, 12, (B, H, M), device=DEV, generator=gen).float() + 0.5) * SCALE
    reference.mask_pages_past_context(scores, sl, bs)
    rest = (SCALE, scores, *_policy("sparse", lens, bs, H, M, gen), 1e-5)
    want, got = _fp8_spec(q, kc8, meta8, sc, bt, sl, *rest), _kernel(q, kc8, meta8, bt, sl, *rest, kv_scales=sc)
    assert want[..., 5].sum() > 0, "the test needs violations to count"
    torch.testing.assert_close(got[..., 5], want[..., 5], rtol=0, atol=0, msg=lambda m: f"violations: {m}")
    n = (sl.long() + bs - 1) // bs
    _check(got, want, _fp8_mass(q, kc8, sc, bt, sl), n, f"fp8 G={G} integer data, low scores")


def test_fp8_statistics_read_codes_and_replay_in_a_graph(cuda_ops, gen):
    """kernels.selection_stats over an FP8 cache launches the statistics kernels on the codes
    (besides the query's float32 copy; no dequantised copy of the table), and a graph
    captured on static buffers gives the spec's answer for inputs copied in after capture."""
    from tinyserve_core.kernels import fp8_reference as f8

    bs, G, D = 16, 4, 128
    lens = [300, 45, 170, 16]
    q, kc, meta, bt, sl = _case(lens, G, D, bs, torch.float16, gen)
    kc8, meta8, sc = _fp8(kc, meta)
    H, M = kc.shape[2], bt.shape[1]
    scores = f8.page_scores(q, meta8, sc, bt, sl, SCALE, bs)
    pi, _, ent, budget = _policy("sparse", lens, bs, H, M, gen)
    call = lambda: kernels.selection_stats(q, kc8, meta8, bt, sl, SCALE, scores, pi, None, ent, budget,  # noqa: E731
                                           kv_scales=sc)
    call()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    launched = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                and not e.name.startswith("Activity Buffer")]
    assert sum("stats_pages_kernel" in n for n in launched) == 1 and len(launched) == 3, \
        f"kernels launched: {launched}"
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    new_lens = [299, 44, 1, 16]
    q.copy_((torch.randn(q.shape, device=DEV, generator=gen) * 2).to(q.dtype))
    sl.copy_(torch.tensor(new_lens, dtype=torch.int32))
    scores.copy_(f8.page_scores(q, meta8, sc, bt, sl, SCALE, bs))
    pi.copy_(_page_lists(new_lens, bs, H, pi.shape[-1], gen))
    graph.replay()
    torch.cuda.synchronize()
    want = _fp8_spec(q, kc8, meta8, sc, bt, sl, SCALE, scores, pi, None, ent, budget, 1e-5)
    n = (sl.long() + bs - 1) // bs
    _check(out.clone(), want, _fp8_mass(q, kc8, sc, bt, sl), n, "fp8 graph replay")


@pytest.mark.parametrize("fp8", [False, True])
def test_a_block_table_of_width_zero_gets_the_spec(cuda_ops, gen, fp8):
    """No pages to read (a table of width 0): the op answers with the spec's record rather than
    launching a grid of no chunks."""
    q, kc, meta, bt, sl = _case([5, 9], 4, 64, 16, torch.float16, gen)
    empty, zero = bt[:, :0], torch.zeros_like(sl)
    scores = torch.zeros(2, kc.shape[2], 0, device=DEV)
    if fp8:
        kc8, meta8, sc = _fp8(kc, meta)
        got = kernels.selection_stats(q, kc8, meta8, empty, zero, SCALE, scores, kv_scales=sc)
        want = _fp8_spec(q, kc8, meta8, sc, empty, zero, SCALE, scores)
    else:
        got = kernels.selection_stats(q, kc, meta, empty, zero, SCALE, scores)
        want = sr.selection_stats(q, kc, meta, empty, zero, SCALE, scores)
    assert got.shape == (2, kc.shape[2], sr.C)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
