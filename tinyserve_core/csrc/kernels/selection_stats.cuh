// Selection statistics of one decode layer (spec: kernels/stats_reference.py) in two launches:
// the torch spec is ~50 small ops per layer, and at serving shapes (a few hundred tokens,
// batch 64) their launches cost more than the bytes.
//
//   1. stats_pages_kernel, one CTA per chunk of kStatsChunk pages of a (sequence, kv-head)
//      row, so a long context spreads over the GPU (one CTA a row read 1 x 32K in 1.9 ms from 8
//      SMs, and 64 x 32K at a quarter of the copy bandwidth): warps take pages in turn; lanes
//      split a token's head_dim in 8/16-byte slices (L lanes a token, 32/L tokens a pass) and
//      every lane keeps the G query slices in registers. A page leaves its logsumexp per query
//      head (fp32, max-subtracted online) in a scratch [rows, G, M] and counts its tokens above
//      the page's score + rounding tolerance (bound violations; a count per chunk).
//   2. selection_stats_kernel, one CTA per row, owns the record: per head the max and sum over
//      the pages' logsumexps give each page's softmax mass, as the spec's softmax over all
//      tokens summed per page; the G heads' masses are averaged. The oracle: a bitonic sort
//      in shared memory of 64-bit keys (mass bits, then the page inverted), descending, so
//      equal masses go to the lower page as the spec's stable argsort does; the first k
//      (pages selected) are the oracle.
//
// An FP8 (e4m3) cache (kernels/fp8_reference.py) is read as it is: a lane takes 8 codes of a
// token (8 bytes), and its sums are multiplied by the page's K scale, a power of two, so the
// logits and bounds are exactly those of the dequantised values the spec reads, without a
// float32 copy of the table (19 GB at its peak per layer at 64 x 32K tokens, on an H200).
//
// Everything is sized from the arguments (no host sync; the scratch is an output of the
// op's glue), so a CUDA graph can hold it. The row kernel's shared memory: the logsumexps
// [G, M] (later the sort keys, same bytes), the masses [M] and the selected flags [M];
// stats_smem() says how much.
#pragma once

#include <cuda_fp8.h>

#include <type_traits>

#include "common.cuh"

namespace tinyserve {

constexpr int kStatsThreads = 256;
constexpr int kStatsWarps = kStatsThreads / 32;
constexpr int kStatsChannels = 8;  // stats_reference.CHANNELS
constexpr int kStatsChunk = 64;    // pages a CTA of the pages kernel: 8 a warp

struct SelectionStatsParams {
  const void* query;         // [B, Hq, D] in the cache dtype, or float32 when query_f32
  const void* k_cache;       // [NB, bs, Hkv, D]
  const void* meta;          // [NB, 2, Hkv, D] key min / max per page, cache dtype
  const float* kv_scales;    // [NB, 2, Hkv] page K / V scales of an FP8 cache (the query is then float32)
  const int* block_tables;   // [B, M]
  const int* seq_lens;       // [B]
  const float* scores;       // [B, Hkv, M] the policy's page bounds
  const int* page_indices;   // [B, Hkv, num_selected] logical pages, -1 pad; null: dense
  const int* candidates;     // [B, Hkv, num_candidates] likewise; null: no stage 1
  const float* entropy;      // (b, h) at b * entropy_sb + h * entropy_sh (broadcast); null: NaN
  const void* budget;        // likewise, float32 or int64 (budget_i64); null: the pages selected
  int64_t entropy_sb, entropy_sh, budget_sb, budget_sh;
  float* out;                // [B, Hkv, kStatsChannels + 4M]
  float* lse;                // scratch [B * Hkv, G, M]: the pages kernel's logsumexps
  float* viol;               // scratch [B * Hkv, chunks]: its bound violations a chunk
  int num_chunks;            // ceil(M / kStatsChunk)
  int num_kv_heads, group, block_size, max_pages, num_selected, num_candidates, query_f32, budget_i64;
  float scale, rtol;
};

__host__ __device__ constexpr int stats_pow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Byte offsets into the row kernel's dynamic shared memory; `total` is what a launch needs.
struct StatsSmem {
  int mass, flags, total;
};
__host__ __device__ constexpr StatsSmem stats_smem(int group, int max_pages) {
  const int lse = group * max_pages * 4, keys = stats_pow2(max_pages) * 8;
  const int mass = ((lse > keys ? lse : keys) + 15) / 16 * 16;
  const int flags = mass + max_pages * 4;
  return {mass, flags, flags + (max_pages + 15) / 16 * 16};
}

// What a lane reads of a token's head_dim at a time: 16 bytes of a 16/32-bit cache, 8 codes
// (8 bytes) of an FP8 one, so an FP8 lane holds as many floats as an fp16 lane.
template <typename T>
struct StatsSlice {
  static constexpr bool kFp8 = sizeof(T) == 1;
  using Raw = std::conditional_t<kFp8, uint2, uint4>;
  static constexpr int kVec = sizeof(Raw) / sizeof(T);

  __device__ __forceinline__ static Raw load(const T* p) {
    if constexpr (kFp8) return __ldg(reinterpret_cast<const uint2*>(p));
    else return __ldg(reinterpret_cast<const uint4*>(p));
  }
  __device__ __forceinline__ static Raw load_stream(const T* p) {
    if constexpr (kFp8) {
      uint2 r;
      asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
      return r;
    } else {
      return ld_stream(p);
    }
  }
  __device__ __forceinline__ static Raw zero() {
    if constexpr (kFp8) return make_uint2(0, 0);
    else return make_uint4(0, 0, 0, 0);
  }
  // The slice as floats; an FP8 slice's codes (the caller multiplies its sums by the page's
  // K scale: a power of two, so every product and partial sum is the spec's dequantised one
  // scaled exactly, and the same bits come out, for one multiply a sum instead of one a code).
  __device__ __forceinline__ static void unpack(const Raw& r, float (&f)[kVec]) {
    if constexpr (kFp8) {
      const uint32_t w[2] = {r.x, r.y};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>((w[i / 2] >> (16 * (i % 2))) & 0xffffu), __NV_E4M3));
        const float2 x = __half22float2(h);
        f[2 * i] = x.x, f[2 * i + 1] = x.y;
      }
    } else if constexpr (sizeof(T) == 4) {
      f[0] = __uint_as_float(r.x), f[1] = __uint_as_float(r.y), f[2] = __uint_as_float(r.z), f[3] = __uint_as_float(r.w);
    } else {
      const T* h = reinterpret_cast<const T*>(&r);
#pragma unroll
      for (int i = 0; i < kVec; ++i) f[i] = to_float(h[i]);
    }
  }
};

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

// The N per-head partial sums v[0..N) of the L lanes of a token, reduced so that every lane
// ends with one head's total in v[0]: head li / (L / N) (li the lane's place in its token).
// Recursive halving (a lane keeps the half of the heads its bit selects and sends the other
// half to its partner), then an all-reduce over the L / N lanes that share a head: N - 1 +
// log2(L / N) shuffles in all (5 for 4 heads over 16 lanes) where a sum of every head on
// every lane takes N log2(L) (16). Partners add the same two floats, so the lanes of a head agree bit
// for bit.
template <int L, int N>
__device__ __forceinline__ float heads_sum(float (&v)[N], int lane) {
  static_assert(N <= L, "a head a lane at most");
  int o = L / 2;
#pragma unroll
  for (int n = N; n > 1; n >>= 1, o >>= 1) {
    const bool upper = lane & o;
#pragma unroll
    for (int i = 0; i < n / 2; ++i) {
      const float send = upper ? v[i] : v[i + n / 2], keep = upper ? v[i + n / 2] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
  float x = v[0];
#pragma unroll
  for (; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Phase 1 for one page: its logsumexp per query head into lse[g * M + page]; returns the
// lane's count of bound violations (one lane of each token and head counts).
template <typename T, int D, int GMAX>
__device__ __forceinline__ int stats_page(const SelectionStatsParams& p, const float (&qr)[GMAX][StatsSlice<T>::kVec],
                                          int b, int h, int page, int64_t blk, int len, float* lse) {
  using S = StatsSlice<T>;
  constexpr int VEC = S::kVec, L = D / VEC, TPW = 32 / L;
  // K rows in flight per lane, all issued before the page's math: the whole page of 16 tokens
  // where registers allow (8 query heads per kv-head, and 4 over FP8 at three CTAs an SM, keep
  // half: 8 would spill there)
  constexpr int WANT = GMAX <= 2 || (GMAX <= 4 && !S::kFp8) ? 8 : 4;
  constexpr int AHEAD = WANT < 16 / TPW ? WANT : (16 / TPW > 0 ? 16 / TPW : 1);
  const int lane = threadIdx.x & 31, sub = lane / L, li = lane % L;
  const int hd = li / (L / GMAX);                     // the query head this lane follows
  const bool counts = li % (L / GMAX) == 0 && hd < p.group;
  const int H = p.num_kv_heads, M = p.max_pages, bs = p.block_size;
  const int ntok = min(bs, len - page * bs);
  const T* krow = static_cast<const T*>(p.k_cache) + (blk * bs * H + h) * D + li * VEC;
  typename S::Raw raw[AHEAD];
  const auto issue = [&](int t0) {
#pragma unroll
    for (int a = 0; a < AHEAD; ++a) {
      const int t = t0 + a * TPW + sub;
      raw[a] = t < ntok ? S::load_stream(krow + (int64_t)t * H * D) : S::zero();
    }
  };
  issue(0);  // the keys' loads go out beside the bounds' and the score's
  const T* mrow = static_cast<const T*>(p.meta) + (blk * 2 * H + h) * D + li * VEC;
  const float ks = S::kFp8 ? __ldg(p.kv_scales + (blk * 2) * H + h) : 1.f;  // the page's K scale
  float lo[VEC], hi[VEC];
  S::unpack(S::load(mrow), lo);
  S::unpack(S::load(mrow + H * D), hi);
  const float score = p.scores[((int64_t)b * H + h) * M + page];
  float t[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    t[g] = 0.f;
#pragma unroll
    for (int i = 0; i < VEC; ++i) t[g] += fabsf(qr[g][i]) * fmaxf(fabsf(lo[i]), fabsf(hi[i]));
  }
  // the spec's order: (sum * |scale|) * rtol + 1e-30, then score + tol
  const float lim = score + (heads_sum<L>(t, lane) * ks * fabsf(p.scale) * p.rtol + 1e-30f);
  float m = -INFINITY, s = 0.f;
  int viol = 0;
  // One token pass: the lane's logit, its violation and the online max / sum. The update is
  // branch-free (one expf of -|x - m|, then selects: the same floats as the two branches).
  const auto pass = [&](const typename S::Raw& r, bool ok) {
    float k[VEC], d[GMAX];
    S::unpack(r, k);
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      d[g] = 0.f;
#pragma unroll
      for (int i = 0; i < VEC; ++i) d[g] = fmaf(qr[g][i], k[i], d[g]);
    }
    const float x = heads_sum<L>(d, lane) * ks * p.scale;
    const float e = expf(-fabsf(x - m));
    const bool up = x > m;
    viol += ok && counts && x > lim;
    s = !ok ? s : up ? fmaf(s, e, 1.f) : s + e;
    m = ok && up ? x : m;
  };
  for (int t0 = 0; t0 < ntok; t0 += TPW * AHEAD) {
    if (t0 > 0) issue(t0);
    // every pass full (a whole page, mostly): straight-line code, where the registers of 8
    // query heads' passes in flight would halve the CTAs an SM (measured slower)
    if (GMAX <= 4 && t0 + TPW * AHEAD <= ntok) {
#pragma unroll
      for (int a = 0; a < AHEAD; ++a) pass(raw[a], true);
    } else {
#pragma unroll
      for (int a = 0; a < AHEAD; ++a) {
        if (t0 + a * TPW >= ntok) break;  // uniform: no token of the warp's pass is left
        pass(raw[a], t0 + a * TPW + sub < ntok);
      }
    }
  }
#pragma unroll
  for (int o = L; o < 32; o <<= 1) {  // the token slots of the warp
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    lse_merge(m, s, m2, s2);
  }
  if (sub == 0 && counts) lse[hd * M + page] = m + logf(s);
  return viol;
}

// CTAs an SM the pages kernel asks registers for: 3 (80 registers) for FP8 slices and for one
// query head a kv-head, 2 (128) otherwise, where a third CTA's register cap cost more at small
// grids than it gave at large ones (H200, twenty-third session, csrc/NOTES.md).
template <typename T, int GMAX>
__host__ __device__ constexpr int stats_pages_min_ctas() {
  return GMAX <= 4 && (sizeof(T) == 1 || GMAX == 1) ? 3 : 2;
}

// Phase 1: one CTA a chunk of kStatsChunk pages of a row (grid: rows x chunks).
template <typename T, int D, int GMAX>
__global__ void __launch_bounds__(kStatsThreads, stats_pages_min_ctas<T, GMAX>())
    stats_pages_kernel(const __grid_constant__ SelectionStatsParams p) {
  constexpr int VEC = StatsSlice<T>::kVec, L = D / VEC;
  static_assert(D % VEC == 0 && L <= 32 && 32 % L == 0, "a token's head_dim spans 1..32 lanes");
  __shared__ float q_s[GMAX * D];
  const int row = blockIdx.x, chunk = blockIdx.y, H = p.num_kv_heads, G = p.group, M = p.max_pages;
  const int b = row / H, h = row % H, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int len = p.seq_lens[b], n = min((len + p.block_size - 1) / p.block_size, M);
  const int first = chunk * kStatsChunk, end = min(n, first + kStatsChunk);
  float* viol_out = p.viol + (int64_t)row * p.num_chunks + chunk;
  if (first >= end) {  // a chunk past the context: no violations (the row kernel sums them all)
    if (tid == 0) *viol_out = 0.f;
    return;
  }
  const int64_t q0 = (int64_t)row * G * D;  // query heads h*G .. h*G+G-1
  for (int i = tid; i < G * D; i += kStatsThreads) {
    if constexpr (StatsSlice<T>::kFp8) q_s[i] = static_cast<const float*>(p.query)[q0 + i];  // float32 always
    else q_s[i] = p.query_f32 ? static_cast<const float*>(p.query)[q0 + i]
                              : to_float(static_cast<const T*>(p.query)[q0 + i]);
  }
  __syncthreads();
  float qr[GMAX][VEC];
  const int li = lane % L;
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < VEC; ++i) qr[g][i] = g < G ? q_s[g * D + li * VEC + i] : 0.f;
  float* lse = p.lse + (int64_t)row * G * M;
  int viol = 0;
  const int* table = p.block_tables + (int64_t)b * M;
  int blk = first + warp < end ? table[first + warp] : 0;
  for (int pg = first + warp; pg < end; pg += kStatsWarps) {
    const int next = pg + kStatsWarps < end ? table[pg + kStatsWarps] : 0;  // one page ahead
    viol += stats_page<T, D, GMAX>(p, qr, b, h, pg, blk, len, lse);
    blk = next;
  }
  float v[1] = {(float)viol};
  stats_block_sum(v);
  if (tid == 0) *viol_out = v[0];
}

// Phase 2: the record of a row from the pages kernel's logsumexps (grid: kv-heads x batch).
template <int GMAX>
__global__ void __launch_bounds__(kStatsThreads) selection_stats_kernel(const __grid_constant__ SelectionStatsParams p) {
  static_assert(GMAX <= kStatsWarps, "phase 2 gives each query head a warp");
  extern __shared__ __align__(16) unsigned char smem[];
  const StatsSmem lay = stats_smem(p.group, p.max_pages);
  float* lse = reinterpret_cast<float*>(smem);         // [G, M], phase 1-2
  uint64_t* key = reinterpret_cast<uint64_t*>(smem);   // [pow2(n)], phase 3: the same bytes
  float* mass = reinterpret_cast<float*>(smem + lay.mass);
  unsigned char* chosen = smem + lay.flags;
  __shared__ float head_max[GMAX], head_sum[GMAX];

  const int h = blockIdx.x, b = blockIdx.y, H = p.num_kv_heads, G = p.group, M = p.max_pages;
  const int row = b * H + h, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int len = p.seq_lens[b], n = min((len + p.block_size - 1) / p.block_size, M);
  float* out = p.out + (int64_t)row * (kStatsChannels + 4 * M);
  float *sel_plane = out + kStatsChannels, *oracle_plane = sel_plane + M;
  float *score_plane = oracle_plane + M, *cand_plane = score_plane + M;

  for (int i = tid; i < M; i += kStatsThreads) {
    chosen[i] = p.page_indices == nullptr && i < n;
    oracle_plane[i] = 0.f;
    score_plane[i] = i < n ? p.scores[(int64_t)row * M + i] : NAN;
    cand_plane[i] = p.candidates == nullptr ? NAN : 0.f;
  }
  const float* lse_in = p.lse + (int64_t)row * G * M;
  for (int g = 0; g < G; ++g)
    for (int i = tid; i < n; i += kStatsThreads) lse[g * M + i] = lse_in[g * M + i];
  float viol = 0.f;
  for (int i = tid; i < p.num_chunks; i += kStatsThreads) viol += p.viol[(int64_t)row * p.num_chunks + i];
  __syncthreads();  // orders the zeros above before the scatters below (shared and global)
  for (int i = tid; p.page_indices && i < p.num_selected; i += kStatsThreads) {
    const int pg = p.page_indices[(int64_t)row * p.num_selected + i];
    if (pg >= 0 && pg < n) chosen[pg] = 1;
  }
  for (int i = tid; p.candidates && i < p.num_candidates; i += kStatsThreads) {
    const int pg = p.candidates[(int64_t)row * p.num_candidates + i];
    if (pg >= 0 && pg < n) cand_plane[pg] = 1.f;
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
  float acc[3] = {0.f, 0.f, viol};  // pages selected, their mass, violations
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

// The pages kernel's instances the extension builds: cache dtype (__nv_fp8_e4m3: an FP8 cache) x
// head_dim x query heads per kv-head (rounded up; the group itself is a runtime argument); the
// row kernel's: the group bound alone.
#define TINYSERVE_STATS_GROUPS(X, T, D) X(T, D, 1) X(T, D, 2) X(T, D, 4) X(T, D, 8)
#define TINYSERVE_STATS_INSTANCES(X)                                                  \
  TINYSERVE_STATS_GROUPS(X, float, 64) TINYSERVE_STATS_GROUPS(X, float, 128)          \
  TINYSERVE_STATS_GROUPS(X, __half, 64) TINYSERVE_STATS_GROUPS(X, __half, 128)        \
  TINYSERVE_STATS_GROUPS(X, __nv_bfloat16, 64) TINYSERVE_STATS_GROUPS(X, __nv_bfloat16, 128) \
  TINYSERVE_STATS_GROUPS(X, __nv_fp8_e4m3, 64) TINYSERVE_STATS_GROUPS(X, __nv_fp8_e4m3, 128)

}  // namespace tinyserve
