"""The int8 page-bound copy twostage's stage 1 reads (kernels/bound_copy_reference.py): it
must hold every page's min/max box, and its bound must never undercut Quest's; the CUDA
kernels (`pytest -m cuda`, skipped without a GPU) against the reference on random data."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core import kernels
from tinyserve_core.kernels import bound_copy_reference as bc
from tinyserve_core.kernels import quant_reference as qr
from tinyserve_core.kernels import reference

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _meta(nb, h, d, dtype, seed, outlier=True):
    """Per-page key boxes like a model's: channels of very different widths, one outlier channel,
    an offset page and a constant (flat) page."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(nb, 16, h, d, generator=g) * torch.rand(1, 1, 1, d, generator=g) * 3
    if outlier:
        k[..., 3] *= 12
    k[1] += 40.0          # far from zero: the box's mn carries it
    k[2] = 0.7            # flat: every code 0, s 0
    return torch.stack((k.amin(1), k.amax(1)), 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_the_copy_holds_every_box_and_is_tight(dtype, head_dim):
    meta = _meta(24, 3, head_dim, dtype, seed=head_dim)
    rows = torch.zeros(24, 3, bc.row_bytes(head_dim), dtype=torch.uint8)
    bc.write_bound_copy(meta, rows, torch.arange(24))
    _, _, mn, s = bc.decode(rows)
    # the real-number box (float64 holds every mn + s * code exactly) contains the fp16 one
    mn64, s64 = mn.double(), s.double()
    lo = mn64 + s64 * rows[..., head_dim:2 * head_dim].double()
    hi = mn64 + s64 * rows[..., :head_dim].double()
    m = meta.double()
    assert (lo <= m[:, 0]).all() and (hi >= m[:, 1]).all()
    # outward by at most one code and the margin
    tol = (m[:, 0].amin(-1, keepdim=True).abs() + m[:, 1].amax(-1, keepdim=True).abs()) * 2.0 ** -19
    assert ((m[:, 0] - lo) <= s64 + tol).all() and ((hi - m[:, 1]) <= s64 + tol).all()
    assert (rows[..., 2 * head_dim + 8:] == 0).all()
    assert (s[2] > 0).all() and ((hi[2] - lo[2]) < 1e-5).all()      # the flat page: a sliver around 0.7
    zero = torch.zeros(1, 2, 1, head_dim, dtype=dtype)                 # an all-zero box: exact, s = 0
    zrow = torch.zeros(1, 1, bc.row_bytes(head_dim), dtype=torch.uint8)
    bc.write_bound_copy(zero, zrow, torch.arange(1))
    assert (zrow == 0).all()


@pytest.mark.parametrize("head_dim,group", [(64, 4), (128, 1), (128, 8)])
def test_the_copy_bound_is_above_quests_and_ranks_like_it(head_dim, group):
    g = torch.Generator().manual_seed(group)
    nb, hkv, B, M = 48, 2, 3, 14
    meta = _meta(nb, hkv, head_dim, torch.float16, seed=5)
    rows = torch.zeros(nb, hkv, bc.row_bytes(head_dim), dtype=torch.uint8)
    bc.write_bound_copy(meta, rows, torch.arange(nb))
    q = (torch.randn(B, hkv * group, head_dim, generator=g) * 1.5).half()
    tables = torch.randperm(nb, generator=g)[:B * M].view(B, M).int()
    lens = torch.tensor([M * 16, 100, 17])
    exact = reference.page_scores(q, meta, tables, lens, 0.125, 16)
    got = bc.page_scores_copy(q, rows, tables, lens, 0.125, 16)
    live = torch.isfinite(exact)
    assert torch.equal(live, torch.isfinite(got)) and (got[~live] == float("-inf")).all()
    assert (got[live] >= _quest_bound64(q, meta, tables, 0.125)[live]).all()
    # looser, not a different order: rank correlation over the live pages
    a, b = exact[live].argsort().argsort().float(), got[live].argsort().argsort().float()
    assert torch.corrcoef(torch.stack((a, b)))[0, 1] > 0.8


def _quest_bound64(q, meta, tables, scale):
    """Quest's bound in float64 (exact for fp16 inputs up to the sum's last bits), [B, Hkv, M]."""
    B, Hq, D = q.shape
    Hkv = meta.shape[2]
    m = meta[tables.long().clamp(min=0)].double()                      # [B, M, 2, Hkv, D]
    qq = q.double().view(B, 1, Hkv, Hq // Hkv, D)
    u = torch.maximum(qq * m[:, :, 0, :, None], qq * m[:, :, 1, :, None]).sum(-1).amax(-1) * scale
    return u.permute(0, 2, 1)


def test_the_bound_holds_for_queries_on_the_grid_points():
    """One-hot and two-level queries make q * r land on whole codes, where ceil adds no slack:
    the score must still be above Quest's bound computed in float64, on every page."""
    D, nb, hkv = 128, 64, 2
    meta = _meta(nb, hkv, D, torch.float16, seed=9)
    rows = torch.zeros(nb, hkv, bc.row_bytes(D), dtype=torch.uint8)
    bc.write_bound_copy(meta, rows, torch.arange(nb))
    tables = torch.arange(nb, dtype=torch.int32).view(1, nb)
    lens = torch.tensor([nb * 16])
    qs = []
    for c in range(0, D, 5):
        for v in (1.0, -1.0, 0.37, -3.3e-3, 7.0):
            q = torch.zeros(hkv * 4, D)
            q[:, c] = v
            q[1::2, (c + 1) % D] = -v / 3
            qs.append(q)
    q = torch.stack(qs).half()                                          # [N, Hq, D]
    n = q.shape[0]
    got = bc.page_scores_copy(q, rows, tables.expand(n, -1), lens.expand(n), 0.125, 16)
    assert (got >= _quest_bound64(q, meta, tables.expand(n, -1), 0.125)).all()


def test_a_cache_write_re_encodes_the_pages_it_touches():
    torch.manual_seed(0)
    nb, bs, H, D = 8, 4, 2, 64
    k = torch.zeros(nb, bs, H, D)
    v, meta = torch.zeros_like(k), torch.zeros(nb, 2, H, D)
    qk = torch.zeros(nb, bs, H, D, dtype=torch.uint8)
    rows = torch.full((nb, H, bc.row_bytes(D)), 7, dtype=torch.uint8)   # stale bytes
    slots = torch.tensor([4, 5, 6, 13])                                 # pages 1 and 3
    kernels.reshape_and_cache(torch.randn(4, H, D), torch.randn(4, H, D), k, v, meta, slots, qk, qbounds=rows)
    want = torch.full_like(rows, 7)
    bc.write_bound_copy(meta, want, torch.tensor([1, 3]))
    assert torch.equal(rows, want)
    with pytest.raises(ValueError, match="qbounds"):
        kernels.reshape_and_cache(torch.randn(1, H, D), torch.randn(1, H, D), k, v, meta, slots[:1], qbounds=rows)


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("bs", [8, 16, 32])
def test_cuda_cache_write_encodes_the_copy_like_the_reference(dtype, head_dim, bs):
    nb, H = 12, 4
    g = torch.Generator().manual_seed(head_dim)
    k = (torch.randn(nb, bs, H, head_dim, generator=g) * 2).to(dtype)
    meta = torch.randn(nb, 2, H, head_dim, generator=g).to(dtype)
    slots = torch.cat([torch.arange(2 * bs, 4 * bs + 5), torch.tensor([9 * bs, -1])])
    key = (torch.randn(len(slots), H, head_dim, generator=g) * 3 + 1).to(dtype)
    key[:, :, 3] *= 10                                                  # an outlier channel
    val = torch.randn(len(slots), H, head_dim, generator=g).to(dtype)
    qk = torch.randint(0, 256, (nb, bs, H, head_dim // 2), generator=g, dtype=torch.uint8)
    rows = torch.randint(0, 256, (nb, H, bc.row_bytes(head_dim)), generator=g, dtype=torch.uint8)
    cpu = [t.clone() for t in (k, torch.zeros_like(k), meta, qk, rows)]
    gpu = [t.cuda() for t in cpu]
    reference.reshape_and_cache(key, val, *cpu[:3], slots)
    qr.quantize_keys(cpu[0], cpu[2], cpu[3], slots, cpu[4])
    kernels.reshape_and_cache(key.cuda(), val.cuda(), *gpu[:3], slots.cuda(), gpu[3], qbounds=gpu[4])
    torch.cuda.synchronize()
    assert torch.equal(gpu[2].cpu(), cpu[2])
    assert torch.equal(gpu[4].cpu(), cpu[4])


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("head_dim,group,M", [(64, 4, 70), (128, 1, 70), (128, 3, 70), (128, 4, 70), (128, 8, 70),
                                               (128, 4, 600), (64, 2, 600)])
def test_cuda_page_scores_copy_matches_the_reference(head_dim, group, M):
    """M = 70: a partial last 16-page tile; 600: several warps of a CTA and two CTAs a row,
    so the next tile's block ids are fetched ahead."""
    g = torch.Generator().manual_seed(head_dim + group + M)
    nb, hkv, B = 300, 2, 5
    meta = _meta(nb, hkv, head_dim, torch.float16, seed=group)
    rows = torch.zeros(nb, hkv, bc.row_bytes(head_dim), dtype=torch.uint8)
    bc.write_bound_copy(meta, rows, torch.arange(nb))
    q = torch.randn(B, hkv * group, head_dim, generator=g) * 2
    q[0, 0] = 0.0                                                       # a zero query head
    tables = torch.randint(0, nb, (B, M), generator=g).int()
    tables[1, 40:] = -1                                                 # unused entries
    lens = torch.tensor([M * 16, 40 * 16, 1, 333 + 16 * (M - 70), 16 * 9 + 3])
    want = bc.page_scores_copy(q, rows, tables, lens, 0.0883, 16)
    got = kernels.page_scores_copy(q.cuda(), rows.cuda(), tables.cuda(), lens.cuda(), 0.0883, 16).cpu()
    live = torch.isfinite(want)
    assert torch.equal(live, torch.isfinite(got))
    torch.testing.assert_close(got[live], want[live], rtol=2e-5, atol=2e-4)
    # and it is a bound: never below Quest's on the same pages
    assert (got[live] >= _quest_bound64(q, meta, tables, 0.0883)[live].float()).all()   # q as the kernel got it


@pytest.mark.cuda
@CUDA
def test_cuda_page_scores_copy_any_tiles_per_warp_same_scores():
    """Tiles per warp only split the work (the launch picks fewer at small grids): 1, 2, 4, 8 and
    the automatic choice give the same scores."""
    from tinyserve_core.kernels._backend import build
    g = torch.Generator().manual_seed(7)
    nb, hkv, B, M = 300, 2, 3, 600
    meta = _meta(nb, hkv, 128, torch.float16, seed=3)
    rows = torch.zeros(nb, hkv, bc.row_bytes(128), dtype=torch.uint8)
    bc.write_bound_copy(meta, rows, torch.arange(nb))
    q = (torch.randn(B, hkv * 4, 128, generator=g) * 2).cuda()
    tables = torch.randint(0, nb, (B, M), generator=g).int().cuda()
    lens = torch.tensor([M * 16, 333, 16 * 70 + 5], dtype=torch.int32).cuda()
    rows = rows.cuda()
    auto = build().page_scores_copy(q, rows, tables, lens, 0.0883, 16)
    assert torch.isfinite(auto[0]).all() and (auto[1, :, 21:] == float("-inf")).all()
    for tpw in (1, 2, 4, 8):
        assert torch.equal(build().page_scores_copy(q, rows, tables, lens, 0.0883, 16, tpw), auto), tpw
