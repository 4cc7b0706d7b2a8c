// page_scores on tensor cores (fp16 / bf16 metadata, up to 8 query heads per kv-head):
// Quest's bound  sum_i q+_i * max_i + q-_i * min_i  is a GEMV of the page's [max | min] row
// (2D values) against the group's [q+ ; q-], so a tile of 16 pages is 2D / 16 mma.m16n8k16
// with A = the 16 pages' rows straight from global memory and B = the group's heads (one
// column each). The kernel then streams bytes: no per-head shared-memory reads of the query
// and 2D fp32 FMAs per page and head, which held the FMA kernel (page_scores.cuh) at ~80% of
// the copy bandwidth on an H200, latency-bound at 4 CTAs an SM.
//
// The result stays a bound (never below the exact one), on a model of the tensor cores'
// sums that NVIDIA does not document but measurements support (Fasi et al. 2021, Khattak and
// Mikaitis 2025): products of 16-bit values are exact in fp32, and a block FMA adds up to 16
// of them and the accumulator aligned to the largest, with truncation rather than rounding
// toward +inf. Each mma here starts from zero, so its sum of 16 products (in one block FMA,
// or two of 8 where the second takes the first's sum as its accumulator) is off by at most
// ~18 ulps of the sum of its own |products|, and the 2D / 16 partial sums are added in fp32
// rounding up. Over a row that is at most 18 * 2^-23 * sum_i |q_i| * max(|min_i|, |max_i|)
// <= 2^-18.8 S, S = sum_i |q_i| * M (M = the page's largest |min_i|, |max_i|). The kernel
// adds kMmaScoreSlack * S (2^-16, a factor 7 over that), rounded up, to each head's sum
// before the max over heads and the scale (both rounded as in page_scores). So
//   exact <= U <= exact + 1.3 * scale * 2^-16 * S
// (the margin, plus at most 0.27 of it from the rounded-up adds and truncated negative sums),
// which tests/kernels/test_kernels_cuda.py checks in fp64 on random pages. (Accumulating
// across the mmas ties the error to the running total: 16 x 17 ulps of S at head_dim 128, a
// margin of 2^-12 S, which changed 4-19% of the positions of the sorted top-128 page lists
// against the FMA kernel on random keys, H200.)
#pragma once

#include <type_traits>

#include "page_scores.cuh"

namespace tinyserve {

constexpr int kMmaScoreWarps = 4;
constexpr int kMmaScorePages = 16 * kMmaScoreWarps;  // pages per CTA come in multiples of this
constexpr float kMmaScoreSlack = 0x1p-16f;           // the margin for the tensor cores' sums

template <typename T>
using Pair2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;

template <typename T>
__device__ __forceinline__ uint32_t pair_bits(Pair2<T> v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}
template <typename T>
__device__ __forceinline__ Pair2<T> bits_pair(uint32_t u) {
  Pair2<T> v;
  memcpy(&v, &u, 4);
  return v;
}
// m = max(m, |x|) per 16-bit half
template <typename T>
__device__ __forceinline__ uint32_t abs_max2(uint32_t m, uint32_t x) {
  return pair_bits<T>(__hmax2(bits_pair<T>(m), __habs2(bits_pair<T>(x))));
}

// Lane (g, t) owns, of every 16-value chunk pair of a row, the 8 values [32c + 8t, 32c + 8t + 8):
// step s = 2c + h of the GEMV takes values 4h.. as k-slots {2t, 2t + 1, 2t + 8, 2t + 9}, on A and
// B alike, so the permutation cancels in the dot product (as page_scores_copy_kernel).
// Steps [0, D / 16) are the max row with q+, [D / 16, D / 8) the min row with q-.
template <typename T, int D>
struct MmaScoreTile {
  static constexpr int C = D / 32;      // 16-byte vectors of a row a lane loads
  static constexpr int kSteps = D / 8;  // mmas a tile: D / 16 for each row
  using Rows = uint4[2][2 * C];         // pages g and g + 8: C vectors of the max row, then C of the min row

  // the rows of pages blk[0], blk[1] (-1: zeros, nothing read)
  __device__ __forceinline__ static void load(Rows& a, const T* meta, const int (&blk)[2], int Hkv, int kvh, int t) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const T* lo = meta + ((int64_t)max(blk[r], 0) * 2 * Hkv + kvh) * D + 8 * t;
      const T* hi = lo + (int64_t)Hkv * D;
#pragma unroll
      for (int c = 0; c < C; ++c) {
        a[r][c] = blk[r] >= 0 ? ld_stream(hi + 32 * c) : make_uint4(0u, 0u, 0u, 0u);
        a[r][C + c] = blk[r] >= 0 ? ld_stream(lo + 32 * c) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
  }

  // The bound of pages g, g + 8 (best over the group's heads, before the scale), in every
  // lane of the quad. Each mma starts from zero and the 2D / 16 partial sums are added
  // rounded up: a tensor-core sum's error is then relative to its own 16 products, not to
  // the running total (kMmaScoreSlack), and the mmas do not wait on one another.
  __device__ __forceinline__ static void score(const Rows& a, const uint32_t (&bq)[kSteps][2], const float (&ha)[2],
                                               const bool (&head_ok)[2], float (&best)[2]) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const uint4& x = a[0][s >> 1];
      const uint4& y = a[1][s >> 1];
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      Mma<T>::run(d, (s & 1) ? x.z : x.x, (s & 1) ? y.z : y.x, (s & 1) ? x.w : x.y, (s & 1) ? y.w : y.y, bq[s][0],
                  bq[s][1]);
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] = __fadd_ru(acc[i], d[i]);
    }
    // M of pages g, g + 8: the largest |value| of their rows, over the quad
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      uint32_t m2 = 0u;
#pragma unroll
      for (int i = 0; i < 2 * C; ++i) {
        m2 = abs_max2<T>(m2, a[r][i].x);
        m2 = abs_max2<T>(m2, a[r][i].y);
        m2 = abs_max2<T>(m2, a[r][i].z);
        m2 = abs_max2<T>(m2, a[r][i].w);
      }
      const Pair2<T> v = bits_pair<T>(m2);
      float mx = fmaxf(to_float(v.x), to_float(v.y));
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      // acc: (page g, heads 2t, 2t + 1), (page g + 8, the same heads)
      best[r] = -INFINITY;
#pragma unroll
      for (int c = 0; c < 2; ++c)
        if (head_ok[c]) best[r] = fmaxf(best[r], __fadd_ru(acc[2 * r + c], __fmul_ru(ha[c], mx)));
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) best[r] = fmaxf(best[r], __shfl_xor_sync(0xffffffffu, best[r], o));
    }
  }
};

// Warp `warp` of `nwarps` scores the 16-page tiles warp, warp + nwarps, ... of
// [p_begin, p_end) (p_begin a multiple of 16) of row (b, kvh). A page's score depends on its
// own rows only, so any split of the pages gives the same bits.
template <typename T, int D>
__device__ __forceinline__ void score_tiles_mma(const PageScoreParams& p, int b, int kvh, int p_begin, int p_end,
                                                int warp, int nwarps) {
  using Tile = MmaScoreTile<T, D>;
  constexpr int C = Tile::C;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int ntiles = (p_end - p_begin + 15) >> 4;
  if (warp >= ntiles) return;
  const int Hkv = p.num_kv_heads;
  const int npages = min((p.seq_lens[b] + p.block_size - 1) / p.block_size, p.max_blocks);
  const int* bt = p.block_tables + (int64_t)b * p.bt_stride;
  int blk[2];
  // the block ids of pages g, g + 8 of a tile (-1 past the context or past the warp's tiles)
  auto block_ids = [&](int tile) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int m = p_begin + tile * 16 + g + 8 * r;
      blk[r] = tile < ntiles && m < npages ? bt[m] : -1;
    }
  };
  block_ids(warp);

  // B: head g's q+ and q- on the lane's channels (lanes g >= group carry zeros), and the
  // head's sum of |q_i| (rounded up) for the margin.
  const bool live_head = g < p.group;
  const T* qh = static_cast<const T*>(p.q) + ((int64_t)b * p.num_q_heads + kvh * p.group + (live_head ? g : 0)) * D;
  uint32_t bq[Tile::kSteps][2];
  float qabs = 0.f;
  const Pair2<T> zero = bits_pair<T>(0u);
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const uint4 v = live_head ? *reinterpret_cast<const uint4*>(qh + 32 * c + 8 * t) : make_uint4(0u, 0u, 0u, 0u);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const Pair2<T> x = bits_pair<T>(w[j]);
      // step 2c + j / 2 takes words j (b0) and j + 1 (b1) of the pair (j even)
      bq[2 * c + (j >> 1)][j & 1] = pair_bits<T>(__hmax2(x, zero));
      bq[D / 16 + 2 * c + (j >> 1)][j & 1] = pair_bits<T>(__hmin2(x, zero));
      qabs = __fadd_ru(qabs, fabsf(to_float(x.x)));
      qabs = __fadd_ru(qabs, fabsf(to_float(x.y)));
    }
  }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) qabs = __fadd_ru(qabs, __shfl_xor_sync(0xffffffffu, qabs, o));
  // this lane's output heads 2t, 2t + 1
  float ha[2];
#pragma unroll
  for (int c = 0; c < 2; ++c) ha[c] = __fmul_ru(__shfl_sync(0xffffffffu, qabs, (2 * t + c) * 4), kMmaScoreSlack);
  const bool head_ok[2] = {2 * t < p.group, 2 * t + 1 < p.group};

  const T* meta = static_cast<const T*>(p.meta);
  float* out = p.out + ((int64_t)b * Hkv + kvh) * p.max_blocks;
  auto store = [&](const float (&best)[2], int tile) {
    if (t < 2) {
      const int m = p_begin + tile * 16 + g + 8 * t;
      const float u = t ? best[1] : best[0];  // not best[t]: a lane-indexed array lives on the stack
      if (m < p_end) out[m] = m < npages ? __fmul_ru(u, u >= 0.f ? p.scale_hi : p.scale_lo) : -INFINITY;
    }
  };
  for (int tile = warp; tile < ntiles; tile += nwarps) {
    typename Tile::Rows a;
    Tile::load(a, meta, blk, Hkv, kvh, t);
    block_ids(tile + nwarps);  // behind this tile's rows
    float best[2];
    Tile::score(a, bq, ha, head_ok, best);
    store(best, tile);
  }
}

// Grid (kv-head, page range, sequence) as page_scores_kernel; pages_per_cta a multiple of 64.
template <typename T, int D>
__global__ void __launch_bounds__(kMmaScoreWarps * 32)
page_scores_mma_kernel(const __grid_constant__ PageScoreParams p) {
  pdl_entry();
  const int p_begin = blockIdx.y * p.pages_per_cta;
  score_tiles_mma<T, D>(p, blockIdx.z, blockIdx.x, p_begin, min(p.max_blocks, p_begin + p.pages_per_cta),
                        threadIdx.x >> 5, kMmaScoreWarps);
}

#define TINYSERVE_SCORE_MMA_INSTANCES(X) \
  X(__half, 64)                          \
  X(__half, 128)                         \
  X(__nv_bfloat16, 64)                   \
  X(__nv_bfloat16, 128)

}  // namespace tinyserve
