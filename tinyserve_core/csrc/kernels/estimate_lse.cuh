// Stage 2 of the `twostage` selector, part 1: the estimated attention of every candidate
// page (spec: quant_reference.page_estimates): per query head, the logsumexp over the page's
// context tokens of scale * q . k_hat, k_hat dequantised on the fly from the int8/int4 copy.
//
// One warp per candidate page, 16 tokens per warp step (two lanes per token, each owning
// half of the row's 16-byte chunks, interleaved so the two halves read different banks of
// the per-page query table). Dequantisation is folded into the query: with the page's
// channel minima lo and its one step = r / L (quant_keys.cuh),
//   q . k_hat = sum_d q_d * lo_d + sum_d (q_d * step) * code_d,
// so the warp first builds qs = q * step (shared memory, [G][D]) and the bias q . lo, and the
// token loop is one FMA per code and query head. Codes become floats through the exponent
// trick (0x4B000000 | code is 2^23 + code exactly), cheaper than the int-to-float unit. The
// page's logsumexp is an online max/sum over its tokens (one pass). Plain FP32 math: the
// kernel reads 1/2 (int8) or 1/4 (int4) of the fp16 key bytes of the candidates.
#pragma once

#include "common.cuh"
#include "quant_keys.cuh"

namespace tinyserve {

constexpr int kLseWarps = 4;

// A warp's qs table row: 4 floats of padding after every 32 channels, so the two lanes of a
// token (16 or 32 channels apart) read different banks for int4 codes as for int8.
__host__ __device__ constexpr int qs_row(int head_dim) { return head_dim + head_dim / 8; }
__device__ __forceinline__ int qs_at(int ch) { return ch + (ch >> 5) * 4; }

// Dynamic shared memory: the group's queries, then per warp its qs table.
__host__ __device__ constexpr int estimate_lse_smem_bytes(int group, int head_dim) {
  return (group * head_dim + kLseWarps * group * qs_row(head_dim)) * 4;
}

template <int BITS>
__device__ __forceinline__ float code_at(uint32_t w, int e) {
  // e-th code of a 32-bit word: bytes for int8, nibbles (low first) for int4
  const uint32_t c = BITS == 8 ? (w >> (8 * e)) & 255u : (w >> (4 * e)) & 15u;
  return __uint_as_float(0x4B000000u | c) - 8388608.f;
}

// One candidate page's loads, issued a page ahead of its math (see the kernel).
template <typename T, int BITS, int D>
struct LsePage {
  static constexpr int NM = D / 32;            // channels of the metadata per lane
  static constexpr int CPL = D * BITS / 8 / 32;  // 16-byte code chunks per lane and token
  int c, n_tok;
  long long blk;
  T lo[NM], hi[NM];
  uint4 v[CPL];                                // the first token step's codes
};

// PageEstimateParams (quant_keys.cuh); `pages_per_warp` candidate pages per warp.
// Latency, not arithmetic, set this kernel's time: each page used to wait on four dependent
// global reads in turn (candidate id, block id, metadata, codes). Now lane i resolves the
// candidate and block of the warp's i-th page once, up front, and every page's metadata
// and first codes are loaded one page ahead, while the previous page is computed.
template <typename T, int BITS, int D, int GMAX>
__global__ void __launch_bounds__(kLseWarps * 32, 4)
    estimate_lse_kernel(const __grid_constant__ PageEstimateParams p, int pages_per_warp) {
  static_assert((D * BITS) % 256 == 0, "two lanes per row, 16-byte chunks each");
  using Page = LsePage<T, BITS, D>;
  constexpr int DQ = D * BITS / 8;            // bytes per quantised row
  constexpr int CPL = Page::CPL;
  constexpr int CODES = 16 * 8 / BITS;        // codes per chunk
  // The next page's codes too, where registers allow (8 query heads per kv-head would spill)
  constexpr bool kCodesAhead = GMAX <= 4;
  extern __shared__ float sm[];
  const int h = blockIdx.y, b = blockIdx.z, G = p.group, H = p.num_kv_heads, BS = p.block_size;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* sq = sm;                                     // [G][D]
  constexpr int QR = qs_row(D);
  float* qs = sm + G * D + warp * G * QR;             // [G][QR] this warp's q * step
  const float* qg = p.q + ((int64_t)b * p.num_q_heads + h * G) * D;
  // q rounded to fp16, as the spec (quant_reference.page_estimates)
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) sq[i] = __half2float(__float2half_rn(qg[i]));
  const int seq_len = p.seq_lens[b];
  const int j = lane >> 1, part = lane & 1;
  const int c0 = blockIdx.x * kLseWarps * pages_per_warp;
  int my_n;   // lane i: the warp's i-th page
  long long my_blk;
  resolve_page(p, b, h, H, BS, c0 + lane * kLseWarps + warp, lane < pages_per_warp, seq_len, my_n, my_blk);
  auto load = [&](int it, Page& P) {
    page_at(it, c0, kLseWarps, warp, my_n, my_blk, P.c, P.n_tok, P.blk);
    if (P.c >= p.num_candidates || P.n_tok <= 0) return;
    const T* mlo = static_cast<const T*>(p.meta) + (P.blk * 2 * H + h) * D;
#pragma unroll
    for (int k = 0; k < Page::NM; ++k) P.lo[k] = mlo[lane + 32 * k], P.hi[k] = mlo[(int64_t)H * D + lane + 32 * k];
    if (kCodesAhead && j < P.n_tok) {
      const uint8_t* row = p.qkeys + ((P.blk * BS + j) * H + h) * DQ;
#pragma unroll
      for (int i = 0; i < CPL; ++i) P.v[i] = ld_stream(row + (i * 2 + part) * 16);
    }
  };
  __syncthreads();
  pipeline_pages<Page>(p, b, h, lane, pages_per_warp, load, [&](const Page& cur, float* out) {
    const int n_tok = cur.n_tok;
    const long long blk = cur.blk;
    float bias[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) bias[g] = 0.f;
    // one step for the page's channels: its range r = max_d(hi_d - lo_d) over L
    float rng = -INFINITY;
#pragma unroll
    for (int k = 0; k < Page::NM; ++k) rng = fmaxf(rng, to_float(cur.hi[k]) - to_float(cur.lo[k]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) rng = fmaxf(rng, __shfl_xor_sync(0xffffffffu, rng, o));
    const float step = rng / float((1 << BITS) - 1);
#pragma unroll
    for (int k = 0; k < Page::NM; ++k) {
      const int d = lane + 32 * k;
      const float lo = to_float(cur.lo[k]);
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        if (g < G) {
          qs[g * QR + qs_at(d)] = sq[g * D + d] * step;
          bias[g] = fmaf(sq[g * D + d], lo, bias[g]);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) bias[g] += __shfl_xor_sync(0xffffffffu, bias[g], o);
    }
    __syncwarp();
    float m[GMAX], s[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) m[g] = -INFINITY, s[g] = 0.f;
    for (int t0 = 0; t0 < n_tok; t0 += 16) {
      const int t = t0 + j;
      const bool active = t < n_tok;
      float acc[GMAX];
#pragma unroll
      for (int g = 0; g < GMAX; ++g) acc[g] = 0.f;
      if (active) {
        uint4 vv[CPL];
        if (kCodesAhead && t0 == 0) {
#pragma unroll
          for (int i = 0; i < CPL; ++i) vv[i] = cur.v[i];
        } else {
          const uint8_t* row = p.qkeys + ((blk * BS + t) * H + h) * DQ;
#pragma unroll
          for (int i = 0; i < CPL; ++i) vv[i] = ld_stream(row + (i * 2 + part) * 16);
        }
#pragma unroll
        for (int i = 0; i < CPL; ++i) {
          const int ci = i * 2 + part;
          const uint32_t words[4] = {vv[i].x, vv[i].y, vv[i].z, vv[i].w};
#pragma unroll
          for (int wi = 0; wi < 4; ++wi) {
#pragma unroll
            for (int e4 = 0; e4 < CODES / 16; ++e4) {   // groups of 4 codes in this word
              const int ch = ci * CODES + wi * (CODES / 4) + e4 * 4;
              float f[4];
#pragma unroll
              for (int e = 0; e < 4; ++e) f[e] = code_at<BITS>(words[wi], e4 * 4 + e);
#pragma unroll
              for (int g = 0; g < GMAX; ++g) {
                if (g < G) {
                  const float4 w = *reinterpret_cast<const float4*>(qs + g * QR + qs_at(ch));
                  acc[g] = fmaf(w.x, f[0], fmaf(w.y, f[1], fmaf(w.z, f[2], fmaf(w.w, f[3], acc[g]))));
                }
              }
            }
          }
        }
      }
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        if (g < G) {
          acc[g] += __shfl_xor_sync(0xffffffffu, acc[g], 1);
          const float logit = active ? (acc[g] + bias[g]) * p.scale : -INFINITY;
          float mx = logit;
#pragma unroll
          for (int o = 16; o > 1; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
          const float mn = fmaxf(m[g], mx);               // finite: token t0 is active
          float e = (active && part == 0) ? __expf(logit - mn) : 0.f;
#pragma unroll
          for (int o = 16; o > 0; o >>= 1) e += __shfl_xor_sync(0xffffffffu, e, o);
          s[g] = s[g] * __expf(m[g] - mn) + e;
          m[g] = mn;
        }
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int g = 0; g < GMAX; ++g)
        if (g < G) out[(int64_t)g * p.num_candidates] = m[g] + logf(s[g]);
    }
    __syncwarp();  // the next page rewrites qs
  });
}

#define TINYSERVE_LSE_INSTANCES(X)                                                                   \
  X(__half, 8, 64, 1) X(__half, 8, 64, 2) X(__half, 8, 64, 4) X(__half, 8, 64, 8)                    \
  X(__half, 8, 128, 1) X(__half, 8, 128, 2) X(__half, 8, 128, 4) X(__half, 8, 128, 8)                \
  X(__half, 4, 64, 1) X(__half, 4, 64, 2) X(__half, 4, 64, 4) X(__half, 4, 64, 8)                    \
  X(__half, 4, 128, 1) X(__half, 4, 128, 2) X(__half, 4, 128, 4) X(__half, 4, 128, 8)                \
  X(__nv_bfloat16, 8, 64, 1) X(__nv_bfloat16, 8, 64, 2) X(__nv_bfloat16, 8, 64, 4)                  \
  X(__nv_bfloat16, 8, 64, 8) X(__nv_bfloat16, 8, 128, 1) X(__nv_bfloat16, 8, 128, 2)                \
  X(__nv_bfloat16, 8, 128, 4) X(__nv_bfloat16, 8, 128, 8) X(__nv_bfloat16, 4, 64, 1)                \
  X(__nv_bfloat16, 4, 64, 2) X(__nv_bfloat16, 4, 64, 4) X(__nv_bfloat16, 4, 64, 8)                  \
  X(__nv_bfloat16, 4, 128, 1) X(__nv_bfloat16, 4, 128, 2) X(__nv_bfloat16, 4, 128, 4)               \
  X(__nv_bfloat16, 4, 128, 8)

}  // namespace tinyserve
