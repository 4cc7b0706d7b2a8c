// page_scores on tensor cores (fp16 / bf16 metadata, up to 8 query heads per kv-head):
// Quest's bound  sum_i q+_i * max_i + q-_i * min_i  is a GEMV of the page's [max | min] row
// (2D values) against the group's [q+ ; q-], so a tile of 16 pages is 2D / 16 mma.m16n8k16
// with A = the 16 pages' rows and B = the group's heads (one column each). The kernel then
// streams bytes: no per-head shared-memory reads of the query and 2D fp32 FMAs per page and
// head, which held the FMA kernel (page_scores.cuh) at ~80% of the copy bandwidth on an H200,
// latency-bound at 4 CTAs an SM. The rows land in a warp's 8 KB of shared memory (cp.async)
// and ldmatrix feeds the A fragments step by step: with the rows loaded into registers instead
// (the eighteenth session's kernel) a warp held 64 registers of rows while they flew, 128 in
// all, 4 CTAs an SM; staged, it takes 72-80 and runs 6 CTAs an SM, and 64 x 32K went from
// 136.5-139.9 to 132.5-134.1 us (H200, csrc/NOTES.md nineteenth session).
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

// The [max | min] rows (CP 16-byte chunks each, row_bytes a half) of a tile's 16 pages of
// kv-head kvh into `sbuf`, chunk c of page p at chunk c ^ (p & 7); lane l < 16 holds `bid`, the
// block of page l (-1: zeros, nothing read). The caller commits the copy group.
template <int CP>
__device__ __forceinline__ void copy_bound_rows(uint32_t sbuf, const uint8_t* meta, int row_bytes, int Hkv, int kvh,
                                                int bid, int lane) {
  constexpr int PPI = 32 / CP;  // pages one copy instruction covers
  const int c = lane % CP, sub = lane / CP;
  const int64_t off = ((c < CP / 2 ? (int64_t)Hkv : 0) + kvh) * row_bytes + (c % (CP / 2)) * 16;
#pragma unroll
  for (int i = 0; i < 16 / PPI; ++i) {
    const int pg = i * PPI + sub;
    const int blk = __shfl_sync(0xffffffffu, bid, pg);
    cp_async16_s(sbuf + (pg * CP + (c ^ (pg & 7))) * 16, meta + (int64_t)max(blk, 0) * 2 * Hkv * row_bytes + off,
                 blk >= 0 ? 16 : 0, false);
  }
}

// A tile's rows in shared memory: page p's [max | min] row is CP 16-byte chunks, chunk c at
// position c ^ (p & 7), so the 8 rows one ldmatrix reads at one chunk fall in 8 distinct bank
// groups. Step s of the GEMV takes chunks 2s, 2s + 1 (channels [16 s, 16 s + 16) of the max
// row for s < D / 16, of the min row after): k-slots 2t, 2t + 1 / 2t + 8, 2t + 9 of lane (g, t)
// are channels 16 s' + 2t (+1) / 16 s' + 8 + 2t (+1), on A (ldmatrix) and B (score_tiles_mma) alike.
template <typename T, int D>
struct MmaScoreTile {
  static constexpr int CP = D / 4;              // 16-byte chunks of a page's [max | min] row
  static constexpr int kSteps = D / 8;          // mmas a tile: D / 16 for each row
  static constexpr int kBytes = 16 * CP * 16;   // a warp's buffer: 16 pages
  static_assert(CP >= 8 && 32 % CP == 0, "rows of 8-32 chunks");

  // The rows of the tile's 16 pages into the warp's buffer `sbuf`; lane l < 16 holds `bid`, the
  // block of page l (-1: zeros, nothing read). One commit group.
  using Query = T;
  static constexpr int kDim = D;

  // Element of the head's query that B register j of step s < D / 16 holds on lane t (and the
  // next one): channels 16 s + 8 j + 2 t, as ldmatrix lays the rows out.
  __device__ __forceinline__ static int query_offset(int s, int j, int t) { return 16 * s + 8 * j + 2 * t; }

  __device__ __forceinline__ static void load(uint32_t sbuf, const PageScoreParams& p, int bid, int kvh, int lane) {
    copy_bound_rows<CP>(sbuf, static_cast<const uint8_t*>(p.meta), D * (int)sizeof(T), p.num_kv_heads, kvh, bid, lane);
    cp_async_commit();
  }

  // Tile page m's bound u in value units (16-bit bounds are the values themselves).
  __device__ __forceinline__ static float page_bound(uint32_t, int, float u) { return u; }

  // Step s's A fragment (pages g, g + 8 of the tile; channels as query_offset) for lane `lane`.
  __device__ __forceinline__ static void fragment(uint32_t sbuf, int s, int lane, uint32_t (&a)[4]) {
    const int mi = lane >> 3, r = lane & 7;  // ldmatrix: lanes 8 mi .. 8 mi + 7 address matrix mi's rows
    const uint32_t row = sbuf + (r + 8 * (mi & 1)) * CP * 16;
    ldmatrix_x4(a[0], a[1], a[2], a[3], row + (((2 * s + (mi >> 1)) ^ r) * 16));
  }
};

// Warp `warp` of `nwarps` scores the 16-page tiles warp, warp + nwarps, ... of
// [p_begin, p_end) (p_begin a multiple of 16) of row (b, kvh), through its shared-memory
// buffer `sbuf` (MmaScoreTile::kBytes). A page's score depends on its own rows only, so any
// split of the pages gives the same bits.
// The bound of tile pages g, g + 8 (best over the group's heads, before the scale and the
// tile's page_bound), in every lane of the quad. Each mma starts from zero and the 2D / 16
// partial sums are added rounded up: a tensor-core sum's error is then relative to its own 16
// products, not to the running total (kMmaScoreSlack), and the mmas do not wait on one another.
template <typename Tile>
__device__ __forceinline__ void score_tile(uint32_t sbuf, const uint32_t (&bq)[Tile::kSteps][2], const float (&ha)[2],
                                           const bool (&head_ok)[2], float (&best)[2], int lane) {
  using T = typename Tile::Query;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  uint32_t mabs[2] = {0u, 0u};  // the largest |value| of pages g, g + 8 on this lane's channels
#pragma unroll
  for (int s = 0; s < Tile::kSteps; ++s) {
    uint32_t a[4];
    Tile::fragment(sbuf, s, lane, a);
    float d[4] = {0.f, 0.f, 0.f, 0.f};
    Mma<T>::run(d, a[0], a[1], a[2], a[3], bq[s][0], bq[s][1]);
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i] = __fadd_ru(acc[i], d[i]);
    mabs[0] = abs_max2<T>(abs_max2<T>(mabs[0], a[0]), a[2]);
    mabs[1] = abs_max2<T>(abs_max2<T>(mabs[1], a[1]), a[3]);
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    // M of the page: over the quad, whose lanes hold every channel
    const Pair2<T> v = bits_pair<T>(mabs[rr]);
    float mx = fmaxf(to_float(v.x), to_float(v.y));
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    // acc: (page g, heads 2t, 2t + 1), (page g + 8, the same heads)
    best[rr] = -INFINITY;
#pragma unroll
    for (int c = 0; c < 2; ++c)
      if (head_ok[c]) best[rr] = fmaxf(best[rr], __fadd_ru(acc[2 * rr + c], __fmul_ru(ha[c], mx)));
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) best[rr] = fmaxf(best[rr], __shfl_xor_sync(0xffffffffu, best[rr], o));
  }
}

// Tile: MmaScoreTile (16-bit bounds) or Fp8ScoreTile (page_scores_fp8.cuh), which load and
// read the rows; the query setup, the margin and the loop are theirs in common.
template <typename Tile>
__device__ __forceinline__ void score_tiles_mma(const PageScoreParams& p, int b, int kvh, int p_begin, int p_end,
                                                int warp, int nwarps, uint32_t sbuf) {
  using T = typename Tile::Query;
  constexpr int D = Tile::kDim;
  constexpr int H = Tile::kSteps / 2;  // mmas a row
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int ntiles = (p_end - p_begin + 15) >> 4;
  if (warp >= ntiles) return;
  const int Hkv = p.num_kv_heads;
  const int npages = min((p.seq_lens[b] + p.block_size - 1) / p.block_size, p.max_blocks);
  const int* bt = p.block_tables + (int64_t)b * p.bt_stride;
  // lane l < 16: the block of page l of a tile (-1 past the context or past the warp's tiles)
  auto block_id = [&](int tile) {
    const int m = p_begin + tile * 16 + lane;
    return lane < 16 && tile < ntiles && m < npages ? bt[m] : -1;
  };
  int bid = block_id(warp);

  // B: head g's q+ and q- on the lane's channels (lanes g >= group carry zeros), and the
  // head's sum of |q_i| (rounded up) for the margin.
  const bool live_head = g < p.group;
  const T* qh = static_cast<const T*>(p.q) + ((int64_t)b * p.num_q_heads + kvh * p.group + (live_head ? g : 0)) * D;
  uint32_t bq[Tile::kSteps][2];
  float qabs = 0.f;
  const Pair2<T> zero = bits_pair<T>(0u);
#pragma unroll
  for (int s = 0; s < H; ++s) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const uint32_t w = live_head ? *reinterpret_cast<const uint32_t*>(qh + Tile::query_offset(s, j, t)) : 0u;
      const Pair2<T> x = bits_pair<T>(w);
      bq[s][j] = pair_bits<T>(__hmax2(x, zero));
      bq[H + s][j] = pair_bits<T>(__hmin2(x, zero));
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

  float* out = p.out + ((int64_t)b * Hkv + kvh) * p.max_blocks;
  // the scores of `tile` from its rows in `buf`
  const auto emit = [&](int tile, uint32_t buf) {
    float best[2];
    score_tile<Tile>(buf, bq, ha, head_ok, best, lane);
    if (t < 2) {
      const int m = p_begin + tile * 16 + g + 8 * t;
      // not best[t]: a lane-indexed array lives on the stack
      const float u = Tile::page_bound(buf, g + 8 * t, t ? best[1] : best[0]);
      if (m < p_end) out[m] = m < npages ? __fmul_ru(u, u >= 0.f ? p.scale_hi : p.scale_lo) : -INFINITY;
    }
  };
  for (int tile = warp; tile < ntiles; tile += nwarps) {
    Tile::load(sbuf, p, bid, kvh, lane);
    bid = block_id(tile + nwarps);  // behind this tile's rows
    cp_async_wait<0>();
    __syncwarp();  // every lane's copies have landed
    emit(tile, sbuf);
    __syncwarp();  // every lane's ldmatrix reads are done before the next tile's copies
  }
}

// Grid (kv-head, page range, sequence) as page_scores_kernel; pages_per_cta a multiple of 64.
// At least 6 CTAs an SM (72-80 registers, no spills): the shared-memory buffers (32 KB a CTA at
// head_dim 128) allow 6, and without the bound ptxas took 149 registers and ran 9% slower.
template <typename T, int D>
__global__ void __launch_bounds__(kMmaScoreWarps * 32, 6)
page_scores_mma_kernel(const __grid_constant__ PageScoreParams p) {
  __shared__ __align__(128) uint4 buf[kMmaScoreWarps][MmaScoreTile<T, D>::kBytes / 16];
  pdl_entry();
  const int p_begin = blockIdx.y * p.pages_per_cta, warp = threadIdx.x >> 5;
  score_tiles_mma<MmaScoreTile<T, D>>(p, blockIdx.z, blockIdx.x, p_begin,
                                      min(p.max_blocks, p_begin + p.pages_per_cta), warp, kMmaScoreWarps,
                                      static_cast<uint32_t>(__cvta_generic_to_shared(buf[warp])));
}

#define TINYSERVE_SCORE_MMA_INSTANCES(X) \
  X(__half, 64)                          \
  X(__half, 128)                         \
  X(__nv_bfloat16, 64)                   \
  X(__nv_bfloat16, 128)

}  // namespace tinyserve
