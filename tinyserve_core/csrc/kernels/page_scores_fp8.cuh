// page_scores over an FP8 cache's page bounds (kernels/fp8_reference.py): the [max | min]
// rows are e4m3 codes under the page's K scale s, so Quest's bound is
//   s * sum_i q+_i * max_i + q-_i * min_i   (codes max_i, min_i; s > 0 factors out)
// and the tensor-core GEMV of page_scores_mma.cuh runs on the codes: every e4m3 value is
// exact in fp16, so the same mma, the same margin argument (products exact in fp32, each mma
// from zero, partial sums rounded up, kMmaScoreSlack * S with S = sum |q_i| * M in code units)
// and the same loop (score_tiles_mma) apply, and the rounded-up product by s (a power of two:
// exact but for underflow) keeps the result a bound. The rows are half the bytes of fp16
// bounds: 1/16 of the page's FP8 K/V at block 16, as fp16 bounds are of an fp16 page.
//
// A warp's 16 pages' rows (2D bytes each) land in shared memory by cp.async, chunk c of page
// p at c ^ (p & 7) as in MmaScoreTile, with the pages' K scales (4-byte copies in the same
// group: a scale loaded into a register would put a second dependent load, block table then
// scale, in front of the rows). ldmatrix.x2 of a chunk gives lane (g, t) the 4 codes
// 4t .. 4t + 3 of pages g and g + 8; one cvt.f16x2.e4m3x2 per pair makes the A registers, so
// step s's k-slots 2t, 2t + 1 / 2t + 8, 2t + 9 are channels 16 s' + 4t (+1) / 16 s' + 4t + 2 (+1)
// (query_offset), the order the FP8 decode kernel reads keys in. The query is fp16 (the FP8
// attention's).
#pragma once

#include "page_scores_mma.cuh"
#include "paged_attention_fp8.cuh"

namespace tinyserve {

template <int D>
struct Fp8ScoreTile {
  using Query = __half;
  static constexpr int kDim = D;
  static constexpr int CP = D / 8;               // 16-byte chunks of a page's [max | min] row
  static constexpr int kSteps = D / 8;           // mmas a tile: D / 16 for each row, one chunk each
  static constexpr int kRowBytes = 16 * CP * 16;
  static constexpr int kBytes = kRowBytes + 16 * 4;  // a warp's buffer: 16 pages' rows, their K scales
  static_assert(CP >= 8 && 32 % CP == 0, "rows of 8-32 chunks");

  __device__ __forceinline__ static int query_offset(int s, int j, int t) { return 16 * s + 4 * t + 2 * j; }

  __device__ __forceinline__ static void load(uint32_t sbuf, const PageScoreParams& p, int bid, int kvh, int lane) {
    const int Hkv = p.num_kv_heads;
    copy_bound_rows<CP>(sbuf, static_cast<const uint8_t*>(p.meta), D, Hkv, kvh, bid, lane);
    if (lane < 16)  // entry 0 of the page's [K, V] scales
      cp_async4(sbuf + kRowBytes + 4 * lane, p.kv_scales + ((int64_t)max(bid, 0) * 2) * Hkv + kvh, bid >= 0 ? 4 : 0);
    cp_async_commit();
  }

  __device__ __forceinline__ static void fragment(uint32_t sbuf, int s, int lane, uint32_t (&a)[4]) {
    const int r = lane & 7;  // ldmatrix.x2: lanes 0..7 address pages 0..7, lanes 8..15 pages 8..15
    uint32_t w0, w1;
    ldmatrix_x2(w0, w1, sbuf + ((r + 8 * ((lane >> 3) & 1)) * CP + (s ^ r)) * 16);
    a[0] = e4m3x2_to_half2(w0);        // page g, channels 4t, 4t + 1
    a[1] = e4m3x2_to_half2(w1);        // page g + 8
    a[2] = e4m3x2_to_half2(w0 >> 16);  // page g, channels 4t + 2, 4t + 3
    a[3] = e4m3x2_to_half2(w1 >> 16);
  }

  // Tile page m's bound u (code units) times its K scale, rounded up.
  __device__ __forceinline__ static float page_bound(uint32_t sbuf, int m, float u) {
    return __fmul_ru(u, ld_shared_f32(sbuf + kRowBytes + 4 * m));
  }
};

// Grid and CTA as page_scores_mma_kernel (one 16-page tile a warp, 64 pages a CTA, 6 CTAs an SM
// at 72-80 registers). Measured at 64 x 32K on an H200 (csrc/NOTES.md): two tiles in flight a
// warp (128 pages a CTA) 99.5 us against 87.4; 7 CTAs an SM (72 registers) 87.1 against 88.1,
// 8 (64 registers, 48 bytes spilled) 95.6.
template <int D>
__global__ void __launch_bounds__(kMmaScoreWarps * 32, 6)
page_scores_fp8_kernel(const __grid_constant__ PageScoreParams p) {
  __shared__ __align__(128) uint4 buf[kMmaScoreWarps][Fp8ScoreTile<D>::kBytes / 16];
  pdl_entry();
  const int p_begin = blockIdx.y * p.pages_per_cta, warp = threadIdx.x >> 5;
  score_tiles_mma<Fp8ScoreTile<D>>(p, blockIdx.z, blockIdx.x, p_begin, min(p.max_blocks, p_begin + p.pages_per_cta),
                                   warp, kMmaScoreWarps, static_cast<uint32_t>(__cvta_generic_to_shared(buf[warp])));
}

}  // namespace tinyserve
