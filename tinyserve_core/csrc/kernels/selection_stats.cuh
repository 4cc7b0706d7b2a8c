// Selection statistics of one decode layer (spec: kernels/stats_reference.py) in one launch:
// the torch spec is ~50 small ops per layer, and at serving shapes (a few hundred tokens,
// batch 64) their launches cost more than the bytes. One CTA per (sequence, kv-head) row
// owns the whole record, so nothing crosses CTAs and no second pass is needed:
//
//   1. warps take pages in turn; lanes split a token's head_dim in 16-byte slices (L lanes a
//      token, 32/L tokens a pass) and every lane keeps the G query slices in registers. A page
//      leaves its logsumexp per query head (fp32, max-subtracted online) in shared memory and
//      counts its tokens above the page's score + rounding tolerance (bound violations).
//   2. per head the max and sum over the pages' logsumexps give each page's softmax mass, as
//      the spec's softmax over all tokens summed per page; the G heads' masses are averaged.
//   3. the oracle: a bitonic sort in shared memory of 64-bit keys (mass bits, then the page
//      inverted), descending, so equal masses go to the lower page as the spec's stable
//      argsort does; the first k (pages selected) are the oracle.
//
// Everything is sized from the arguments (no host sync, no allocation), so a CUDA graph can
// hold it. Shared memory: the logsumexps [G, M] (later the sort keys, same bytes), the
// queries, the masses [M] and the selected flags [M]; stats_smem_bytes() says how much.
#pragma once

#include "common.cuh"

namespace tinyserve {

constexpr int kStatsThreads = 256;
constexpr int kStatsWarps = kStatsThreads / 32;
constexpr int kStatsChannels = 8;  // stats_reference.CHANNELS

struct SelectionStatsParams {
  const void* query;         // [B, Hq, D] in the cache dtype, or float32 when query_f32
  const void* k_cache;       // [NB, bs, Hkv, D]
  const void* meta;          // [NB, 2, Hkv, D] key min / max per page, cache dtype
  const int* block_tables;   // [B, M]
  const int* seq_lens;       // [B]
  const float* scores;       // [B, Hkv, M] the policy's page bounds
  const int* page_indices;   // [B, Hkv, num_selected] logical pages, -1 pad; null: dense
  const int* candidates;     // [B, Hkv, num_candidates] likewise; null: no stage 1
  const float* entropy;      // (b, h) at b * entropy_sb + h * entropy_sh (broadcast); null: NaN
  const void* budget;        // likewise, float32 or int64 (budget_i64); null: the pages selected
  int64_t entropy_sb, entropy_sh, budget_sb, budget_sh;
  float* out;                // [B, Hkv, kStatsChannels + 4M]
  int num_kv_heads, group, block_size, max_pages, num_selected, num_candidates, query_f32, budget_i64;
  float scale, rtol;
};

__host__ __device__ constexpr int stats_pow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Byte offsets into the dynamic shared memory; `total` is what a launch needs.
struct StatsSmem {
  int q, mass, flags, total;
};
__host__ __device__ constexpr StatsSmem stats_smem(int group, int head_dim, int max_pages) {
  const int lse = group * max_pages * 4, keys = stats_pow2(max_pages) * 8;
  const int q = ((lse > keys ? lse : keys) + 15) / 16 * 16;
  const int mass = q + group * head_dim * 4;
  const int flags = mass + max_pages * 4;
  return {q, mass, flags, flags + (max_pages + 15) / 16 * 16};
}

// 16 bytes of the cache dtype as floats.
template <typename T, int VEC>
__device__ __forceinline__ void unpack16(const uint4& r, float (&f)[VEC]) {
  if constexpr (sizeof(T) == 4) {
    f[0] = __uint_as_float(r.x), f[1] = __uint_as_float(r.y), f[2] = __uint_as_float(r.z), f[3] = __uint_as_float(r.w);
  } else {
    const T* h = reinterpret_cast<const T*>(&r);
#pragma unroll
    for (int i = 0; i < VEC; ++i) f[i] = to_float(h[i]);
  }
}

// Sum over the L lanes of a token (aligned groups of L lanes): every lane gets the total.
template <int L>
__device__ __forceinline__ float token_sum(float x) {
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// (m, s): a running max and the sum of exp(x - m), merged with another such pair.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  s = mm == -INFINITY ? 0.f : s * expf(m - mm) + s2 * expf(m2 - mm);
  m = mm;
}

// Block-wide sums of N floats; every thread gets the totals. The counts summed this way
// (pages, violations) stay below 2^24, where float sums of integers are exact.
template <int N>
__device__ __forceinline__ void stats_block_sum(float (&v)[N]) {
  __shared__ float part[kStatsWarps][N];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    for (int o = 16; o > 0; o >>= 1) v[j] += __shfl_xor_sync(0xffffffffu, v[j], o);
    if (lane == 0) part[warp][j] = v[j];
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < N; ++j) {
    float t = 0.f;
    for (int w = 0; w < kStatsWarps; ++w) t += part[w][j];
    v[j] = t;
  }
  __syncthreads();  // `part` is reused by the next call
}

// Descending bitonic sort of n2 (a power of two) distinct keys by the whole block.
__device__ __forceinline__ void bitonic_sort_desc(uint64_t* key, int n2) {
  for (int size = 2; size <= n2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n2 / 2; i += kStatsThreads) {
        const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        const uint64_t a = key[lo], c = key[hi];
        if ((a < c) == ((lo & size) == 0)) key[lo] = c, key[hi] = a;
      }
      __syncthreads();
    }
  }
}

// Phase 1 for one page: its logsumexp per query head into lse[g * M + page]; returns the
// lane's count of bound violations (only the first lane of a token counts).
template <typename T, int D, int GMAX>
__device__ __forceinline__ int stats_page(const SelectionStatsParams& p, const float (&qr)[GMAX][16 / sizeof(T)],
                                          int b, int h, int page, int64_t blk, int len, float* lse) {
  constexpr int VEC = 16 / sizeof(T), L = D / VEC, TPW = 32 / L;
  // K rows in flight per lane: the page's loads are issued before its math (8 query heads
  // per kv-head keep 2, for registers)
  constexpr int AHEAD = GMAX <= 4 ? 4 : 2;
  const int lane = threadIdx.x & 31, sub = lane / L, li = lane % L;
  const int H = p.num_kv_heads, M = p.max_pages, bs = p.block_size;
  const T* mrow = static_cast<const T*>(p.meta) + (blk * 2 * H + h) * D + li * VEC;
  float lo[VEC], hi[VEC];
  unpack16<T>(__ldg(reinterpret_cast<const uint4*>(mrow)), lo);
  unpack16<T>(__ldg(reinterpret_cast<const uint4*>(mrow + H * D)), hi);
  const float score = p.scores[((int64_t)b * H + h) * M + page];
  float lim[GMAX], m[GMAX], s[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    float t = 0.f;
#pragma unroll
    for (int i = 0; i < VEC; ++i) t += fabsf(qr[g][i]) * fmaxf(fabsf(lo[i]), fabsf(hi[i]));
    // the spec's order: (sum * |scale|) * rtol + 1e-30, then score + tol
    lim[g] = score + (token_sum<L>(t) * fabsf(p.scale) * p.rtol + 1e-30f);
    m[g] = -INFINITY, s[g] = 0.f;
  }
  const int ntok = min(bs, len - page * bs);
  const T* krow = static_cast<const T*>(p.k_cache) + (blk * bs * H + h) * D + li * VEC;
  int viol = 0;
  for (int t0 = 0; t0 < ntok; t0 += TPW * AHEAD) {
    uint4 raw[AHEAD];
#pragma unroll
    for (int a = 0; a < AHEAD; ++a) {
      const int t = t0 + a * TPW + sub;
      raw[a] = t < ntok ? ld_stream(krow + (int64_t)t * H * D) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int a = 0; a < AHEAD; ++a) {
      if (t0 + a * TPW >= ntok) break;  // uniform: no token of the warp's pass is left
      const bool ok = t0 + a * TPW + sub < ntok;
      float k[VEC];
      unpack16<T>(raw[a], k);
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        if (g >= p.group) break;  // uniform: every lane runs the shuffles
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < VEC; ++i) d = fmaf(qr[g][i], k[i], d);
        const float x = token_sum<L>(d) * p.scale;
        if (ok) {
          viol += li == 0 && x > lim[g];
          if (x > m[g]) s[g] = s[g] * expf(m[g] - x) + 1.f, m[g] = x;
          else s[g] += expf(x - m[g]);
        }
      }
    }
  }
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    if (g >= p.group) break;
#pragma unroll
    for (int o = L; o < 32; o <<= 1) {  // the token slots of the warp
      const float m2 = __shfl_xor_sync(0xffffffffu, m[g], o), s2 = __shfl_xor_sync(0xffffffffu, s[g], o);
      lse_merge(m[g], s[g], m2, s2);
    }
    if (lane == 0) lse[g * M + page] = m[g] + logf(s[g]);
  }
  return viol;
}

// Two CTAs an SM (128 registers) up to 4 query heads per kv-head; 8 need more registers.
template <typename T, int D, int GMAX>
__global__ void __launch_bounds__(kStatsThreads, GMAX <= 4 ? 2 : 1) selection_stats_kernel(const __grid_constant__ SelectionStatsParams p) {
  constexpr int VEC = 16 / sizeof(T), L = D / VEC;
  static_assert(D % VEC == 0 && L <= 32 && 32 % L == 0, "a token's head_dim spans 1..32 lanes");
  static_assert(GMAX <= kStatsWarps, "phase 2 gives each query head a warp");
  extern __shared__ __align__(16) unsigned char smem[];
  const StatsSmem lay = stats_smem(p.group, D, p.max_pages);
  float* lse = reinterpret_cast<float*>(smem);         // [G, M], phase 1-2
  uint64_t* key = reinterpret_cast<uint64_t*>(smem);   // [pow2(n)], phase 3: the same bytes
  float* q_s = reinterpret_cast<float*>(smem + lay.q);
  float* mass = reinterpret_cast<float*>(smem + lay.mass);
  unsigned char* chosen = smem + lay.flags;
  __shared__ float head_max[GMAX], head_sum[GMAX];

  const int h = blockIdx.x, b = blockIdx.y, H = p.num_kv_heads, G = p.group, M = p.max_pages;
  const int row = b * H + h, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int len = p.seq_lens[b], n = min((len + p.block_size - 1) / p.block_size, M);
  float* out = p.out + (int64_t)row * (kStatsChannels + 4 * M);
  float *sel_plane = out + kStatsChannels, *oracle_plane = sel_plane + M;
  float *score_plane = oracle_plane + M, *cand_plane = score_plane + M;

  const int64_t q0 = (int64_t)row * G * D;  // query heads h*G .. h*G+G-1
  for (int i = tid; i < G * D; i += kStatsThreads) {
    q_s[i] = p.query_f32 ? static_cast<const float*>(p.query)[q0 + i] : to_float(static_cast<const T*>(p.query)[q0 + i]);
  }
  for (int i = tid; i < M; i += kStatsThreads) {
    chosen[i] = p.page_indices == nullptr && i < n;
    oracle_plane[i] = 0.f;
    score_plane[i] = i < n ? p.scores[(int64_t)row * M + i] : NAN;
    cand_plane[i] = p.candidates == nullptr ? NAN : 0.f;
  }
  __syncthreads();  // orders the zeros above before the scatters below (shared and global)
  for (int i = tid; p.page_indices && i < p.num_selected; i += kStatsThreads) {
    const int pg = p.page_indices[(int64_t)row * p.num_selected + i];
    if (pg >= 0 && pg < n) chosen[pg] = 1;
  }
  for (int i = tid; p.candidates && i < p.num_candidates; i += kStatsThreads) {
    const int pg = p.candidates[(int64_t)row * p.num_candidates + i];
    if (pg >= 0 && pg < n) cand_plane[pg] = 1.f;
  }

  // 1. pages
  float qr[GMAX][VEC];
  const int li = lane % L;
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < VEC; ++i) qr[g][i] = g < G ? q_s[g * D + li * VEC + i] : 0.f;
  int viol = 0;
  const int* table = p.block_tables + (int64_t)b * M;
  int blk = warp < n ? table[warp] : 0;
  for (int pg = warp; pg < n; pg += kStatsWarps) {
    const int next = pg + kStatsWarps < n ? table[pg + kStatsWarps] : 0;  // one page ahead
    viol += stats_page<T, D, GMAX>(p, qr, b, h, pg, blk, len, lse);
    blk = next;
  }
  __syncthreads();

  // 2. masses: warp g reduces head g's page logsumexps
  if (warp < G) {
    float mx = -INFINITY, sum = 0.f;
    for (int i = lane; i < n; i += 32) mx = fmaxf(mx, lse[warp * M + i]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    for (int i = lane; i < n; i += 32) sum += expf(lse[warp * M + i] - mx);
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) head_max[warp] = mx, head_sum[warp] = sum;
  }
  __syncthreads();
  float acc[3] = {0.f, 0.f, (float)viol};  // pages selected, their mass, violations
  for (int i = tid; i < M; i += kStatsThreads) {
    sel_plane[i] = chosen[i];
    if (i >= n) continue;
    float ms = 0.f;
    for (int g = 0; g < G; ++g) ms += expf(lse[g * M + i] - head_max[g]) / head_sum[g];
    mass[i] = ms / G;
    acc[0] += chosen[i], acc[1] += chosen[i] ? mass[i] : 0.f;
  }
  stats_block_sum(acc);  // its barriers also end the reads of `lse` before `key` reuses it
  const int k = (int)acc[0];

  // 3. the oracle: masses are >= 0, so their float bits order them; the inverted page in
  // the low word puts equal masses in ascending page order, and the zero pad keys last.
  const int n2 = stats_pow2(n);
  for (int i = tid; i < n2; i += kStatsThreads) {
    key[i] = i < n ? (uint64_t)__float_as_uint(mass[i]) << 32 | (0xffffffffu - (uint32_t)i) : 0ull;
  }
  __syncthreads();
  if (k > 0) bitonic_sort_desc(key, n2);
  float orc[2] = {0.f, 0.f};  // oracle mass, oracle pages also selected
  for (int r = tid; r < k; r += kStatsThreads) {
    const int pg = (int)(0xffffffffu - (uint32_t)key[r]);
    oracle_plane[pg] = 1.f;
    orc[0] += mass[pg], orc[1] += chosen[pg];
  }
  stats_block_sum(orc);
  if (tid == 0) {
    out[0] = (float)k;
    out[1] = (float)n;
    out[2] = n > 0 ? acc[1] : NAN;  // the spec's softmax of an empty context is NaN
    out[3] = n > 0 ? orc[0] : NAN;
    out[4] = k > 0 ? orc[1] / (float)k : 1.f;
    out[5] = acc[2];
    out[6] = p.entropy ? p.entropy[b * p.entropy_sb + h * p.entropy_sh] : NAN;
    const int64_t bi = b * p.budget_sb + h * p.budget_sh;
    out[7] = p.budget == nullptr ? (float)k
             : p.budget_i64     ? (float)static_cast<const int64_t*>(p.budget)[bi]
                                : static_cast<const float*>(p.budget)[bi];
  }
}

// The instances the extension builds: cache dtype x head_dim x query heads per kv-head
// (rounded up; the group itself is a runtime argument).
#define TINYSERVE_STATS_GROUPS(X, T, D) X(T, D, 1) X(T, D, 2) X(T, D, 4) X(T, D, 8)
#define TINYSERVE_STATS_INSTANCES(X)                                                  \
  TINYSERVE_STATS_GROUPS(X, float, 64) TINYSERVE_STATS_GROUPS(X, float, 128)          \
  TINYSERVE_STATS_GROUPS(X, __half, 64) TINYSERVE_STATS_GROUPS(X, __half, 128)        \
  TINYSERVE_STATS_GROUPS(X, __nv_bfloat16, 64) TINYSERVE_STATS_GROUPS(X, __nv_bfloat16, 128)

}  // namespace tinyserve
