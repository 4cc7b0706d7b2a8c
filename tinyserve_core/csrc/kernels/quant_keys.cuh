// Quantised key copy of the `twostage` selector (spec: tinyserve_core/kernels/quant_reference.py).
//   qkeys [NB, BS, Hkv, D * BITS / 8] uint8: code_i = rint((k_i - min_i) / r * L), L = 2^BITS - 1,
//   on the page's own digest (meta [NB, 2, Hkv, D]): the channel minima and one range per
//   (page, kv-head), r = max_i(max_i - min_i); for 4 bits the even channel sits in the low nibble.
// quantize_keys_kernel re-quantises the pages a cache write touched; page_estimates_kernel
// gives, per candidate page and query head, the logsumexp of the estimated logits of the
// page's tokens. Both are plain (one CTA per token / per candidate page): the estimate
// reads 1/2 (int8) or 1/4 (int4) of the fp16 key bytes of a few candidate pages, so it is
// small next to the attention that follows.
#pragma once

#include "bound_copy.cuh"
#include "common.cuh"

namespace tinyserve {

struct QuantKeysParams {
  const void* k_cache;          // [NB, BS, Hkv, D]
  const void* meta;             // [NB, 2, Hkv, D]
  uint8_t* qkeys;               // [NB, BS, Hkv, Dq]
  uint8_t* qbounds;             // [NB, Hkv, 2D + 32] (bound_copy.cuh), or null
  const int64_t* slot_mapping;  // [T], -1 skips
  int num_tokens, num_kv_heads, head_dim, block_size;
};

template <int BITS>
__device__ __forceinline__ uint32_t quant_code(float k, float lo, float rng) {
  constexpr float L = float((1 << BITS) - 1);
  if (!(rng > 0.f)) return 0u;
  // the reference's order of operations, IEEE division: codes match it bit for bit
  const float x = rintf((k - lo) / rng * L);
  return (uint32_t)fminf(fmaxf(x, 0.f), L);
}

// The page grid's range of a (page, kv-head): max over the D channels of max - min, in float
// (exact in any order, as the reference's amax), and the box's ends min_i lo_i, max_i hi_i (the
// bound copy's mn, mx). Lanes stride the channels, then warp reductions.
template <typename T>
__device__ __forceinline__ float3 page_range_warp(const T* mlo, const T* mhi, int D, int lane) {
  float r = -INFINITY, mn = INFINITY, mx = -INFINITY;
  for (int d = lane; d < D; d += 32) {
    const float l = to_float(mlo[d]), h = to_float(mhi[d]);
    r = fmaxf(r, h - l), mn = fminf(mn, l), mx = fmaxf(mx, h);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, o));
    mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  return make_float3(r, mn, mx);
}

// Dynamic shared memory: one range per kv-head. With qbounds, the warp that ranges a head
// also writes its row of the bound copy (the page's min/max are in L1 by then).
template <typename T, int BITS>
__global__ void quantize_keys_kernel(const __grid_constant__ QuantKeysParams p) {
  extern __shared__ float q_rng[];
  const int t = blockIdx.x;
  const int64_t s = p.slot_mapping[t];
  if (s < 0) return;
  const int64_t blk = s / p.block_size;
  const int off = (int)(s % p.block_size);
  if (t + 1 < p.num_tokens) {  // a later token writing further into this page re-quantises it whole
    const int64_t s2 = p.slot_mapping[t + 1];
    if (s2 >= 0 && s2 / p.block_size == blk && (int)(s2 % p.block_size) > off) return;
  }
  const int H = p.num_kv_heads, D = p.head_dim, Dq = D * BITS / 8;
  const T* kc = static_cast<const T*>(p.k_cache);
  const T* mlo = static_cast<const T*>(p.meta) + blk * 2 * H * D;
  const T* mhi = mlo + (int64_t)H * D;
  for (int h = threadIdx.x >> 5; h < H; h += blockDim.x >> 5) {
    const float3 r = page_range_warp(mlo + h * D, mhi + h * D, D, threadIdx.x & 31);
    if ((threadIdx.x & 31) == 0) q_rng[h] = r.x;
    if (p.qbounds != nullptr)
      bound_copy_encode(mlo + h * D, mhi + h * D, r.y, r.z, p.qbounds + (blk * H + h) * bound_row_bytes(D), D,
                        threadIdx.x & 31, 32);
  }
  __syncthreads();
  const int64_t row0 = blk * p.block_size;
  if (D % 8 == 0) {
    // A thread owns one (kv-head, 8-channel vector): its minima and the head's range stay in
    // registers over the page's rows, and each row costs one 16-byte key load (two for
    // float) and one 8- or 4-byte code store. One byte a thread, as this kernel was, took
    // 51 us for a 256-token decode write (H200, 8 kv-heads x 128, int8).
    const int NV = D / 8;
    for (int i = threadIdx.x; i < H * NV; i += blockDim.x) {
      const int h = i / NV, d0 = (i - h * NV) * 8;
      float lo[8], k[8];
      load8(mlo + h * D + d0, lo);
      const float rng = q_rng[h];
      for (int j = 0; j <= off; ++j) {
        load8(kc + ((row0 + j) * H + h) * D + d0, k);
        uint8_t* dst = p.qkeys + ((row0 + j) * H + h) * Dq + d0 * BITS / 8;
        if (BITS == 8) {
          uint32_t w[2] = {0u, 0u};
#pragma unroll
          for (int e = 0; e < 8; ++e) w[e >> 2] |= quant_code<8>(k[e], lo[e], rng) << (8 * (e & 3));
          *reinterpret_cast<uint2*>(dst) = make_uint2(w[0], w[1]);
        } else {
          uint32_t w = 0u;
#pragma unroll
          for (int e = 0; e < 8; ++e) w |= quant_code<4>(k[e], lo[e], rng) << (4 * e);
          *reinterpret_cast<uint32_t*>(dst) = w;
        }
      }
    }
    return;
  }
  const int n = (off + 1) * H * Dq;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int j = i / (H * Dq), r = i - j * H * Dq, h = r / Dq, c = r - h * Dq;
    const T* krow = kc + ((row0 + j) * H + h) * D;
    const float rng = q_rng[h];
    uint32_t byte;
    if (BITS == 8) {
      byte = quant_code<8>(to_float(krow[c]), to_float(mlo[h * D + c]), rng);
    } else {
      const int d = 2 * c;
      byte = quant_code<4>(to_float(krow[d]), to_float(mlo[h * D + d]), rng) |
             (quant_code<4>(to_float(krow[d + 1]), to_float(mlo[h * D + d + 1]), rng) << 4);
    }
    p.qkeys[((row0 + j) * H + h) * Dq + c] = (uint8_t)byte;
  }
}

struct PageEstimateParams {
  const float* q;              // [B, Hq, D] float32
  const uint8_t* qkeys;        // [NB, BS, Hkv, Dq]
  const void* meta;            // [NB, 2, Hkv, D]
  const int* block_tables;     // [B, bt_stride]
  const int* seq_lens;         // [B]
  const int* candidates;       // [B, Hkv, C], -1 pad
  float* out;                  // [B, Hq, C]
  int num_q_heads, num_kv_heads, group, head_dim, block_size, bt_stride, num_candidates;
  float scale;
};

// Lane i of an estimate kernel's warp resolves the warp's i-th candidate page (slot c) once,
// up front (`mine`: the lane has a page): its live tokens and cache block, so no page waits
// on the candidate and block-table reads in turn (kernels/estimate_lse*.cuh).
__device__ __forceinline__ void resolve_page(const PageEstimateParams& p, int b, int h, int H, int BS, int c, bool mine,
                                             int seq_len, int& n_tok, long long& blk) {
  n_tok = 0, blk = 0;
  if (mine && c < p.num_candidates) {
    const int pg = p.candidates[((int64_t)b * H + h) * p.num_candidates + c];
    n_tok = pg < 0 ? 0 : min(BS, seq_len - pg * BS);
    if (n_tok > 0) blk = p.block_tables[(int64_t)b * p.bt_stride + pg];
  }
}

// Page `it` of the warp (candidate slot c0 + it * warps + warp), its tokens and block
// broadcast from the lane that resolved it (resolve_page).
__device__ __forceinline__ void page_at(int it, int c0, int warps, int warp, int my_n, long long my_blk, int& c,
                                        int& n_tok, long long& blk) {
  c = c0 + it * warps + warp;
  n_tok = __shfl_sync(0xffffffffu, my_n, it);
  blk = __shfl_sync(0xffffffffu, my_blk, it);
}

// The page loop of an estimate kernel: page it + 1 is loaded (`load(it, page)`) before page
// it's math (`math(page, out)`, `out` its head-0 output), so its reads are in flight during
// that math; a page without live tokens (padding, past the context) gets -inf, no math.
template <typename Page, typename Load, typename Math>
__device__ __forceinline__ void pipeline_pages(const PageEstimateParams& p, int b, int h, int lane, int pages_per_warp,
                                               Load&& load, Math&& math) {
  Page cur, nxt;
  load(0, cur);
  for (int it = 0; it < pages_per_warp; ++it) {
    if (cur.c >= p.num_candidates) break;
    if (it + 1 < pages_per_warp) load(it + 1, nxt);
    float* out = p.out + ((int64_t)b * p.num_q_heads + h * p.group) * p.num_candidates + cur.c;
    if (cur.n_tok <= 0) {
      if (lane < p.group) out[(int64_t)lane * p.num_candidates] = -INFINITY;
    } else {
      math(cur, out);
    }
    cur = nxt;
  }
}

constexpr int kEstimateThreads = 128;

// Dynamic shared memory: the group's queries, the page's min row, its step, the logits.
__host__ __device__ constexpr int page_estimates_smem_bytes(int group, int head_dim, int block_size) {
  return (group * head_dim + head_dim + 1 + group * block_size) * 4;
}

template <typename T, int BITS>
__global__ void __launch_bounds__(kEstimateThreads) page_estimates_kernel(const __grid_constant__ PageEstimateParams p) {
  extern __shared__ float sm[];
  const int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int G = p.group, D = p.head_dim, BS = p.block_size, H = p.num_kv_heads, Dq = D * BITS / 8;
  float* out = p.out + ((int64_t)b * p.num_q_heads + h * G) * p.num_candidates + c;
  const int pg = p.candidates[((int64_t)b * H + h) * p.num_candidates + c];
  const int n_tok = pg < 0 ? 0 : min(BS, p.seq_lens[b] - pg * BS);
  if (n_tok <= 0) {  // padding, or a page past the context: no mass
    for (int g = threadIdx.x; g < G; g += blockDim.x) out[(int64_t)g * p.num_candidates] = -INFINITY;
    return;
  }
  const int64_t blk = p.block_tables[(int64_t)b * p.bt_stride + pg];
  float* sq = sm;                 // [G][D]
  float* slo = sq + G * D;        // [D]
  float* sstep = slo + D;         // [1]
  float* slog = sstep + 1;        // [G][BS]
  const float* qg = p.q + ((int64_t)b * p.num_q_heads + h * G) * D;
  // q rounded to fp16, as the spec (quant_reference.page_estimates)
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) sq[i] = __half2float(__float2half_rn(qg[i]));
  const T* mlo = static_cast<const T*>(p.meta) + (blk * 2 * H + h) * D;
  const T* mhi = mlo + (int64_t)H * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) slo[d] = to_float(mlo[d]);
  if (threadIdx.x < 32) {
    const float r = page_range_warp(mlo, mhi, D, threadIdx.x).x;
    if (threadIdx.x == 0) sstep[0] = r / float((1 << BITS) - 1);
  }
  __syncthreads();
  const float step = sstep[0];
  for (int i = threadIdx.x; i < G * n_tok; i += blockDim.x) {
    const int g = i / n_tok, t = i - g * n_tok;
    const uint8_t* row = p.qkeys + ((blk * BS + t) * H + h) * Dq;
    const float* qh = sq + g * D;
    float acc = 0.f;
    for (int d = 0; d < D; ++d) {
      const uint32_t code = BITS == 8 ? row[d] : (row[d >> 1] >> ((d & 1) * 4)) & 15u;
      acc = fmaf(qh[d], fmaf((float)code, step, slo[d]), acc);
    }
    slog[g * BS + t] = acc * p.scale;
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int g = warp; g < G; g += blockDim.x >> 5) {
    float m = -INFINITY;
    for (int t = lane; t < n_tok; t += 32) m = fmaxf(m, slog[g * BS + t]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float s = 0.f;
    for (int t = lane; t < n_tok; t += 32) s += __expf(slog[g * BS + t] - m);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) out[(int64_t)g * p.num_candidates] = m + logf(s);
  }
}

#define TINYSERVE_QUANT_INSTANCES(X) \
  X(float, 8)                        \
  X(float, 4)                        \
  X(__half, 8)                       \
  X(__half, 4)                       \
  X(__nv_bfloat16, 8)                \
  X(__nv_bfloat16, 4)

}  // namespace tinyserve
