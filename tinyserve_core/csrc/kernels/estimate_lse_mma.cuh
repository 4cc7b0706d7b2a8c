// Stage 2 of the `twostage` selector on tensor cores (spec: quant_reference.page_estimates):
// per query head, the logsumexp over a candidate page's tokens of scale * q . k_hat, with
// k_hat = lo + step * code dequantised from the page's int8/int4 copy (one step per page and
// kv-head: quant_keys.cuh).
//
// With one step per page the dequantisation leaves the dot product:
//   q . k_hat = q . lo + step * (q . codes),
// and q . codes is one mma.m16n8k16 per 16 channels: A = the codes of 16 tokens (exact in
// fp16), B = q for up to 8 query heads of the group, in fp16 (the spec rounds q to fp16; a
// fp16 model's queries are exact in it), with fp32 accumulation. B is the same for every
// page, so each lane holds its B fragments in registers for the whole CTA; only the bias
// q . lo and the step are per page (the per-channel grid this replaced rebuilt a q * step
// table in shared memory for every page, split into fp16 high and low parts for two mmas
// a step).
//
// Channels are summed in an order of our choosing: lane t of a quad owns a contiguous
// quarter of the row (its `chunk`), so its A fragments are whole 32-bit words of codes, and
// its B fragments list q in that same order. One warp per candidate page, 16-token tiles
// (any block size), pages loaded one page ahead as in estimate_lse.cuh.
#pragma once

#include "common.cuh"
#include "quant_keys.cuh"

namespace tinyserve {

constexpr int kMmaLseWarps = 4;
// Ring stages a warp: the page computed + the pages loading. int8 takes 3 so that 6 CTAs
// (24 warps) fit an SM's shared memory, as int4's 4 stages do.
__host__ __device__ constexpr int mma_lse_stages(int bits) { return bits == 8 ? 3 : 4; }

// A ring stage holds a page's first 16 code rows and its min and max rows.
__host__ __device__ constexpr int estimate_mma_stage_bytes(int head_dim, int bits, int elem_bytes) {
  return 16 * head_dim * bits / 8 + 2 * head_dim * elem_bytes;
}
// Dynamic shared memory: the group's fp32 queries [8][D] (heads past the group zero, for the
// per-page bias q . lo), then each warp's ring. Head_dim 128, fp16: 34,816 bytes (int8) or
// 28,672 (int4), both under 48 KB.
__host__ __device__ constexpr int estimate_mma_smem_bytes(int head_dim, int bits, int elem_bytes) {
  return 8 * head_dim * 4 + kMmaLseWarps * mma_lse_stages(bits) * estimate_mma_stage_bytes(head_dim, bits, elem_bytes);
}

__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // the host dispatches this kernel on sm_80+ only
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_h2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// Codes of one 32-bit word as fp16 pairs for one or two mma steps (see the channel order).
// int8: bytes (c0 c1 c2 c3) -> pairs (c0, c1), (c2, c3) for one step.
__device__ __forceinline__ void codes8(uint32_t w, uint32_t& p0, uint32_t& p1) {
  const __half2 k1024 = __float2half2_rn(1024.f);
  p0 = h2_bits(__hsub2(bits_h2(__byte_perm(w, 0x64646464u, 0x4140)), k1024));   // 1024 + c, exact
  p1 = h2_bits(__hsub2(bits_h2(__byte_perm(w, 0x64646464u, 0x4342)), k1024));
}
// int4: nibbles n0..n7 (low first) -> (n0, n4), (n1, n5) for one step, (n2, n6), (n3, n7) the next.
__device__ __forceinline__ void codes4(uint32_t w, uint32_t (&p)[4]) {
  const __half2 k1024 = __float2half2_rn(1024.f), k16th = __float2half2_rn(1.f / 16.f),
                km64 = __float2half2_rn(-64.f);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t x = h ? w >> 8 : w;
    p[2 * h] = h2_bits(__hsub2(bits_h2((x & 0x000F000Fu) | 0x64006400u), k1024));
    p[2 * h + 1] = h2_bits(__hfma2(bits_h2((x & 0x00F000F0u) | 0x64006400u), k16th, km64));  // (1024+16n)/16-64
  }
}

// The four physical channels of mma step `s` that quad lane t's B entries (and A columns
// 2t, 2t+1, 2t+8, 2t+9) stand for, in that order.
template <int BITS, int D>
__device__ __forceinline__ void step_channels(int s, int t, int (&ch)[4]) {
  constexpr int CH = D / 4;
  if (BITS == 8) {          // word s of the chunk: channels +0 +1 | +2 +3
    const int base = t * CH + 4 * s;
    ch[0] = base, ch[1] = base + 1, ch[2] = base + 2, ch[3] = base + 3;
  } else {                  // word s/2, pairs (n0 n4)(n1 n5) or (n2 n6)(n3 n7)
    const int base = t * CH + 8 * (s >> 1) + 2 * (s & 1);
    ch[0] = base, ch[1] = base + 4, ch[2] = base + 1, ch[3] = base + 5;
  }
}

// 2^x and log2(x) on the special-function unit, denormals flushed (the estimate's sums are
// >= 1 and its exponents <= 0; ex2(-inf) = 0).
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float lg2_approx(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Warp sum of v[0..N) as a reduce-scatter: at each butterfly step a lane keeps the half of
// its heads on its side of the step's lane bit and adds the partner's copy of that half;
// once one head is left the steps are a plain sum. Lane l ends with v[0] = the sum of head
// l / (32 / N) over all 32 lanes.
template <int N>
__device__ __forceinline__ void bias_scatter(float (&v)[N], int lane) {
  int n = N;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    if (n > 1) {
      const bool up = lane & o;
      const int half = n >> 1;
#pragma unroll
      for (int i = 0; i < N / 2; ++i) {
        if (i < half) {
          const float send = up ? v[i] : v[i + half], keep = up ? v[i + half] : v[i];
          v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
      }
      n = half;
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
    }
  }
}

// The page loop is a ring of cp.async stages per warp: pages it + 1 .. it + 3 are in flight
// while page it is computed (one page ahead in registers left the kernel waiting on its
// loads). Nsight Compute on the ring (H200, 64 x 32K, int4, 512 candidates a row): DRAM at
// 35%, long-scoreboard stalls small; it issues ~380 instructions a page at 0.6 a cycle per
// scheduler, held back by short dependency chains (the shuffles of the per-page reductions,
// mma results) with ~4 warps a scheduler. Hence one mma a step (fp16 q: 105 -> ~70
// registers) and 6 CTAs an SM (csrc/NOTES.md, fifteenth session).
template <typename T, int BITS, int D, int GMAX>
__global__ void __launch_bounds__(kMmaLseWarps * 32, 6)
    estimate_lse_mma_kernel(const __grid_constant__ PageEstimateParams p, int pages_per_warp) {
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  constexpr int DQ = D * BITS / 8;        // bytes per quantised row
  constexpr int CB = DQ / 4;              // bytes of a quad lane's chunk
  constexpr int CW = CB / 4;              // its 32-bit code words
  constexpr int NC = D / 32;              // bound channels a lane (the bias, the range)
  constexpr int STEPS = D / 16;
  constexpr int NS = mma_lse_stages(BITS);
  constexpr int SB = estimate_mma_stage_bytes(D, BITS, sizeof(T));
  constexpr int CODE_CHUNKS = 16 * DQ / 16, BOUND_CHUNKS = 2 * D * (int)sizeof(T) / 16;
  constexpr float L = float((1 << BITS) - 1);
  extern __shared__ __align__(16) float lse_mma_q[];   // [8][D], then the rings
  const int h = blockIdx.y, b = blockIdx.z, G = p.group, H = p.num_kv_heads, BS = p.block_size;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint8_t* ring = reinterpret_cast<uint8_t*>(lse_mma_q + 8 * D) + warp * NS * SB;
  const uint32_t ring_s = static_cast<uint32_t>(__cvta_generic_to_shared(ring));
  const float* qg = p.q + ((int64_t)b * p.num_q_heads + h * G) * D;
  for (int i = threadIdx.x; i < GMAX * D; i += blockDim.x)   // fp16-rounded, as B
    lse_mma_q[i] = i < G * D ? __half2float(__float2half_rn(qg[i])) : 0.f;
  // This lane's B fragments for every step: head g (zero past the group) in fp16, the
  // channels of step_channels(s, t).
  uint32_t bq[STEPS][2];
#pragma unroll
  for (int s = 0; s < STEPS; ++s) {
    int ch[4];
    step_channels<BITS, D>(s, t, ch);
    float x[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) x[k] = g < G ? qg[g * D + ch[k]] : 0.f;
    bq[s][0] = h2_bits(__floats2half2_rn(x[0], x[1])), bq[s][1] = h2_bits(__floats2half2_rn(x[2], x[3]));
  }
  const int seq_len = p.seq_lens[b];
  const int c0 = blockIdx.x * kMmaLseWarps * pages_per_warp;
  int my_n;   // lane i: the warp's i-th page
  long long my_blk;
  resolve_page(p, b, h, H, BS, c0 + lane * kMmaLseWarps + warp, lane < pages_per_warp, seq_len, my_n, my_blk);
  const int64_t page_bytes = (int64_t)BS * H * DQ;
  const int row_bytes = H * DQ;
  // Page it into stage it % NS: code rows 0..15 (rows past the page's tokens zero-filled),
  // then the min and max rows; one commit group per page, empty for pages without tokens.
  auto issue = [&](int it) {
    if (it < pages_per_warp) {
      int c, n_tok;
      long long blk;
      page_at(it, c0, kMmaLseWarps, warp, my_n, my_blk, c, n_tok, blk);
      if (c < p.num_candidates && n_tok > 0) {
        const uint32_t st = ring_s + (it % NS) * SB;
        const uint8_t* codes = p.qkeys + blk * page_bytes + h * DQ;
#pragma unroll
        for (int k = lane; k < CODE_CHUNKS; k += 32) {
          const int row = k / (DQ / 16), col = k % (DQ / 16);
          cp_async16_s(st + k * 16, codes + row * row_bytes + col * 16, row < n_tok ? 16 : 0, false);
        }
        const uint8_t* bounds = static_cast<const uint8_t*>(p.meta) + (blk * 2 * H + h) * D * sizeof(T);
        if (lane < BOUND_CHUNKS) {
          constexpr int RC = BOUND_CHUNKS / 2;   // chunks of one row (min, then max)
          const int which = lane / RC, col = lane % RC;
          cp_async16_s(st + 16 * DQ + lane * 16, bounds + (int64_t)which * H * D * sizeof(T) + col * 16, 16, false);
        }
      }
    }
    cp_async_commit();
  };
  // Code rows 16 on (block sizes over 16) straight from global memory: this lane's row g and
  // quarter t, rows g + 8 one stride on.
  const int lane_off = (g * H + h) * DQ + t * CB;
  auto load_rows = [&](long long blk, int row0, int n_tok, uint32_t (&w)[2][CW]) {
    const uint8_t* base = p.qkeys + blk * page_bytes + lane_off + row0 * row_bytes;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + g + 8 * r;
#pragma unroll
      for (int i = 0; i < CW; i += 2) {
        const uint2 a = row < n_tok ? *reinterpret_cast<const uint2*>(base + r * 8 * row_bytes + 4 * i)
                                    : make_uint2(0u, 0u);
        w[r][i] = a.x, w[r][i + 1] = a.y;
      }
    }
  };
  // Logits in base 2: the softmax runs on ex2/lg2 without the denormal fix-ups of expf/logf.
  const float scale2 = p.scale * 1.4426950408889634f;
  constexpr float kInvL = 1.f / L;   // step = range * (1/L): within an ulp of range / L
  // After bias_scatter, lane `lane` holds the whole bias of head lane / (32 / GMAX); the lanes
  // that start each such run write that head's output.
  constexpr int kRun = 32 / GMAX;
  const int my_head = lane / kRun;
  const bool head_writer = lane % kRun == 0 && my_head < G;
  __syncthreads();   // the queries for the bias
#pragma unroll
  for (int i = 0; i < NS - 1; ++i) issue(i);
  for (int it = 0; it < pages_per_warp; ++it) {
    int c, n_tok;
    long long blk;
    page_at(it, c0, kMmaLseWarps, warp, my_n, my_blk, c, n_tok, blk);
    if (c >= p.num_candidates) break;
    cp_async_wait<NS - 2>();   // page it's group has landed (this lane's copies) ...
    __syncwarp();              // ... and every lane's; the stage read last iteration is free
    issue(it + NS - 1);
    float* out = p.out + ((int64_t)b * p.num_q_heads + h * G) * p.num_candidates + c;
    if (n_tok <= 0) {   // padding, or a page past the context: no mass
      if (lane < G) out[(int64_t)lane * p.num_candidates] = -INFINITY;
      continue;
    }
    const uint8_t* st = ring + (it % NS) * SB;
    // The page's step (its widest channel range over L) and each head's bias q . lo, summed
    // by a reduce-scatter (log2(GMAX) + 5 shuffle rounds instead of 5 per head).
    T lo_t[NC], hi_t[NC];
    {
      const T* lo_row = reinterpret_cast<const T*>(st + 16 * DQ);
      if constexpr (NC == 4) {
        const uint2 a = *reinterpret_cast<const uint2*>(lo_row + lane * NC);
        const uint2 c2 = *reinterpret_cast<const uint2*>(lo_row + D + lane * NC);
        memcpy(lo_t, &a, 8), memcpy(hi_t, &c2, 8);
      } else {
        const uint32_t a = *reinterpret_cast<const uint32_t*>(lo_row + lane * NC);
        const uint32_t c2 = *reinterpret_cast<const uint32_t*>(lo_row + D + lane * NC);
        memcpy(lo_t, &a, 4), memcpy(hi_t, &c2, 4);
      }
    }
    float lo[NC], rng = -INFINITY;
#pragma unroll
    for (int k = 0; k < NC; ++k) lo[k] = to_float(lo_t[k]), rng = fmaxf(rng, to_float(hi_t[k]) - lo[k]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) rng = fmaxf(rng, __shfl_xor_sync(0xffffffffu, rng, o));
    const float sc = rng * kInvL * scale2;   // step, and the softmax's scale in base 2
    float bias[GMAX];
#pragma unroll
    for (int n = 0; n < GMAX; ++n) {
      const float* qn = lse_mma_q + n * D + lane * NC;
      if constexpr (NC == 4) {
        const float4 q4 = *reinterpret_cast<const float4*>(qn);
        bias[n] = fmaf(q4.x, lo[0], fmaf(q4.y, lo[1], fmaf(q4.z, lo[2], q4.w * lo[3])));
      } else {
        const float2 q2 = *reinterpret_cast<const float2*>(qn);
        bias[n] = fmaf(q2.x, lo[0], q2.y * lo[1]);
      }
    }
    bias_scatter<GMAX>(bias, lane);
    float m[2] = {-INFINITY, -INFINITY}, s[2] = {0.f, 0.f};
    for (int row0 = 0; row0 < n_tok; row0 += 16) {
      uint32_t w[2][CW];
      if (row0 == 0) {   // from the stage: rows g and g + 8, quarter t
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const uint8_t* src = st + (g + 8 * r) * DQ + t * CB;
#pragma unroll
          for (int i = 0; i < CW; i += 4) {
            if (CW - i >= 4) {
              const uint4 a = *reinterpret_cast<const uint4*>(src + 4 * i);
              w[r][i] = a.x, w[r][i + 1] = a.y, w[r][i + 2] = a.z, w[r][i + 3] = a.w;
            } else {
              const uint2 a = *reinterpret_cast<const uint2*>(src + 4 * i);
              w[r][i] = a.x, w[r][i + 1] = a.y;
            }
          }
        }
      } else {
        load_rows(blk, row0, n_tok, w);
      }
      // Two accumulators (even and odd steps) on sm_90: one chain through all STEPS mmas
      // would wait out each mma's latency in turn (sm_80 keeps one chain: registers).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
      constexpr int LO = 0;
#else
      constexpr int LO = 1;
#endif
      float acc4[2][4] = {};
#pragma unroll
      for (int sp = 0; sp < STEPS; sp += (BITS == 8 ? 1 : 2)) {
        uint32_t a[2][4];          // [step within the word][a0..a3]
        if (BITS == 8) {
          codes8(w[0][sp], a[0][0], a[0][2]);
          codes8(w[1][sp], a[0][1], a[0][3]);
        } else {
          uint32_t r0[4], r1[4];
          codes4(w[0][sp >> 1], r0);
          codes4(w[1][sp >> 1], r1);
          a[0][0] = r0[0], a[0][2] = r0[1], a[0][1] = r1[0], a[0][3] = r1[1];
          a[1][0] = r0[2], a[1][2] = r0[3], a[1][1] = r1[2], a[1][3] = r1[3];
        }
#pragma unroll
        for (int k = 0; k < (BITS == 8 ? 1 : 2); ++k) {
          const int s = sp + k;
          mma_16816(acc4[LO ? s & 1 : 0], a[k], bq[s][0], bq[s][1]);
        }
      }
      // acc: rows g (0, 1) and g + 8 (2, 3), heads 2t (0, 2) and 2t + 1 (1, 3)
      const bool v0 = row0 + g < n_tok, v1 = row0 + g + 8 < n_tok;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float a0 = LO ? acc4[0][e] + acc4[1][e] : acc4[0][e];
        const float a1 = LO ? acc4[0][2 + e] + acc4[1][2 + e] : acc4[0][2 + e];
        const float l0 = v0 ? a0 * sc : -INFINITY;
        const float l1 = v1 ? a1 * sc : -INFINITY;
        float mx = fmaxf(l0, l1);
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float mn = fmaxf(m[e], mx);   // finite: row row0 is live
        float sum = ex2_ftz(l0 - mn) + ex2_ftz(l1 - mn);   // ex2(-inf) = 0
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        s[e] = s[e] * ex2_ftz(m[e] - mn) + sum;
        m[e] = mn;
      }
    }
    // Head n's max and sum sit in every lane of quad position n / 2 (entry n % 2).
    const int src = my_head >> 1;
    const float m0 = __shfl_sync(0xffffffffu, m[0], src), m1 = __shfl_sync(0xffffffffu, m[1], src);
    const float s0 = __shfl_sync(0xffffffffu, s[0], src), s1 = __shfl_sync(0xffffffffu, s[1], src);
    if (head_writer) {
      const bool odd = my_head & 1;
      const float lse2 = (odd ? m1 : m0) + lg2_approx(odd ? s1 : s0);
      out[(int64_t)my_head * p.num_candidates] = fmaf(bias[0], p.scale, lse2 * 0.6931471805599453f);
    }
  }
  cp_async_wait<0>();   // no copy may land after the CTA is gone
}

// Instances: TINYSERVE_LSE_INSTANCES (estimate_lse.cuh), the same list for both kernels.

}  // namespace tinyserve
