// page_scores: the Quest bounding-box bound of each page's attention logit,
//   U[b, g, p] = scale * max_{h in group g} sum_i max(q_hi * min_pi, q_hi * max_pi).
// Every product, sum and the final scaling round toward +infinity, so the computed U is
// never below the exact real-number bound, hence never below any true scale * q.k of a key
// in the page: the bound stays exact in floating point. (Built without fast-math.)
#pragma once

#include "common.cuh"

namespace tinyserve {

struct PageScoreParams {
  const void* q;            // [B, Hq, D]
  const void* meta;         // [NB, 2, Hkv, D]
  const int* block_tables;  // [B, bt_stride]
  const int* seq_lens;      // [B]
  float* out;               // [B, Hkv, max_blocks]
  int num_q_heads, num_kv_heads, group, head_dim, block_size, bt_stride, max_blocks;
  int pages_per_cta;
  // The caller's (double) scale rounded down and up to float: a positive bound is scaled
  // by the upper one and a negative bound by the lower one, so the rounding of the scale
  // itself can never pull the result below the exact scale * bound.
  float scale_lo, scale_hi;
};

constexpr int kScoreWarps = 4;
constexpr int kScoreUnroll = 4;

// Lanes split into groups of LPP, one page per group, one 16-byte vector of the min row
// and one of the max row per lane. Query heads of the group sit in shared memory (fp32).
template <typename T, int D>
__global__ void __launch_bounds__(kScoreWarps * 32) page_scores_kernel(const __grid_constant__ PageScoreParams p) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int LPP = D / VEC;           // lanes per page
  constexpr int PPW = 32 / LPP;          // pages per warp step
  static_assert(LPP <= 32 && 32 % LPP == 0, "head_dim must fill whole lanes");
  extern __shared__ float sq[];          // [group][D]

  const int b = blockIdx.z, kvh = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int sub = lane / LPP, li = lane % LPP;
  const int seq_len = p.seq_lens[b];
  const int n_pages = (seq_len + p.block_size - 1) / p.block_size;

  const T* qg = static_cast<const T*>(p.q) + ((int64_t)b * p.num_q_heads + kvh * p.group) * D;
  for (int i = threadIdx.x; i < p.group * D; i += blockDim.x) sq[i] = to_float(qg[i]);
  __syncthreads();

  const int p_begin = blockIdx.x * p.pages_per_cta;
  const int p_end = min(p.max_blocks, p_begin + p.pages_per_cta);
  float* out = p.out + ((int64_t)b * p.num_kv_heads + kvh) * p.max_blocks;
  const int64_t row = (int64_t)p.num_kv_heads * D;  // elements between meta rows
  const T* meta = static_cast<const T*>(p.meta);

  // The loop bound is warp-uniform so every lane reaches the shuffles.
  for (int wb = p_begin + warp * PPW * kScoreUnroll; wb < p_end;
       wb += kScoreWarps * PPW * kScoreUnroll) {
    const int base = wb + sub * kScoreUnroll;
    uint4 lo[kScoreUnroll], hi[kScoreUnroll];
#pragma unroll
    for (int u = 0; u < kScoreUnroll; ++u) {
      const int pg = base + u;
      lo[u] = hi[u] = make_uint4(0, 0, 0, 0);
      if (pg < p_end && pg < n_pages) {
        const int64_t blk = p.block_tables[(int64_t)b * p.bt_stride + pg];
        const T* m0 = meta + (blk * 2 * p.num_kv_heads + kvh) * D + li * VEC;
        lo[u] = *reinterpret_cast<const uint4*>(m0);
        hi[u] = *reinterpret_cast<const uint4*>(m0 + row);
      }
    }
#pragma unroll
    for (int u = 0; u < kScoreUnroll; ++u) {
      const int pg = base + u;
      const T* el = reinterpret_cast<const T*>(&lo[u]);
      const T* eh = reinterpret_cast<const T*>(&hi[u]);
      float best = -INFINITY;
      for (int h = 0; h < p.group; ++h) {
        const float* qh = sq + h * D + li * VEC;
        // max(q*lo, q*hi) is q*hi for q >= 0 and q*lo otherwise (hi >= lo): one fused
        // multiply-add per channel, rounded up once.
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < VEC; ++i)
          acc = __fmaf_ru(qh[i], qh[i] >= 0.f ? to_float(eh[i]) : to_float(el[i]), acc);
#pragma unroll
        for (int o = LPP / 2; o > 0; o >>= 1)
          acc = __fadd_ru(acc, __shfl_xor_sync(0xffffffffu, acc, o));
        best = fmaxf(best, acc);
      }
      if (li == 0 && pg < p_end) out[pg] = pg < n_pages ? __fmul_ru(best, best >= 0.f ? p.scale_hi : p.scale_lo) : -INFINITY;
    }
  }
}

// select_pages: the k highest-scoring pages of each (sequence, kv-head) row, one CTA per
// row. The k-th largest score is found exactly by a bitwise binary search over the
// order-preserving integer image of the floats (32 block-wide counts); pages above it are
// taken, ties at it by lowest page index, and a block-wide scan writes them in page order.
// Pages scoring -inf (past the context) come out as -1, as do slots past the row's length.
constexpr int kSelectThreads = 1024;
constexpr int kSelectMaxItems = 4;  // rows up to 4096 pages in registers; longer rows: torch.topk

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive block-wide prefix count of `flag` in thread order; *total gets the sum.
__device__ __forceinline__ int select_scan(bool flag, int* warp_tot, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned bal = __ballot_sync(0xffffffffu, flag);
  if (lane == 0) warp_tot[warp] = __popc(bal);
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < kSelectThreads / 32; ++w) {
    const int t = warp_tot[w];
    before += w < warp ? t : 0;
    all += t;
  }
  __syncthreads();
  *total = all;
  return before + __popc(bal & ((1u << lane) - 1u));
}

template <int ITEMS>
__global__ void __launch_bounds__(kSelectThreads)
select_pages_kernel(const float* __restrict__ scores, int M, int k, int* __restrict__ out) {
  __shared__ int warp_tot[kSelectThreads / 32];
  const int row = blockIdx.x;
  const float* s = scores + (int64_t)row * M;
  int* o = out + (int64_t)row * k;
  uint32_t key[ITEMS];
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int i = threadIdx.x + j * kSelectThreads;
    key[j] = i < M ? order_key(s[i]) : 0u;
  }
  // Largest v with #(key >= v) >= k: the k-th largest key (0 when the row has < k pages).
  uint32_t kth = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t cand = kth | (1u << bit);
    int cnt = 0;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) cnt += __syncthreads_count(key[j] >= cand);
    if (cnt >= k) kth = cand;
  }
  int n_gt = 0;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) n_gt += __syncthreads_count(key[j] > kth && key[j] != 0u);
  const int need_eq = k - n_gt;
  int eq_seen = 0, written = 0;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int i = threadIdx.x + j * kSelectThreads;
    const bool real = i < M;
    const bool eq = real && key[j] == kth;
    int tot;
    const int eq_rank = eq_seen + select_scan(eq, warp_tot, &tot);
    eq_seen += tot;
    const bool take = real && (key[j] > kth || (eq && eq_rank < need_eq));
    const int pos = written + select_scan(take, warp_tot, &tot);
    written += tot;
    if (take && pos < k) o[pos] = s[i] == -INFINITY ? -1 : i;
  }
  for (int pos = written + threadIdx.x; pos < k; pos += kSelectThreads) o[pos] = -1;
}

#define TINYSERVE_SELECT_INSTANCES(X) X(1) X(2) X(4)

#define TINYSERVE_SCORE_INSTANCES(X) \
  X(float, 64)                       \
  X(float, 128)                      \
  X(__half, 64)                      \
  X(__half, 128)                     \
  X(__nv_bfloat16, 64)               \
  X(__nv_bfloat16, 128)

}  // namespace tinyserve
