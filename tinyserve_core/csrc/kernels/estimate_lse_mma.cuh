// Stage 2 of the `twostage` selector on tensor cores (spec: quant_reference.page_estimates):
// per query head, the logsumexp over a candidate page's tokens of scale * q . k_hat, with
// k_hat = lo + step * code dequantised from the page's int8/int4 copy.
//
// As in estimate_lse.cuh the dequantisation is folded into the query,
//   q . k_hat = q . lo + sum_d (q_d * step_d) * code_d,
// but the sum is one mma.m16n8k16 per 16 channels: A = the codes of 16 tokens (exact in
// fp16), B = q * step for up to 8 query heads of the group. q * step is split into an fp16
// high part and an fp16 remainder (two mmas into one fp32 accumulator), so the product keeps
// ~22 bits, as the fp32 kernel: no fp16 rounding of the estimate. The CUDA-core kernel spent
// a conversion, a shared-memory read and one FMA per head on every code; here a code costs
// about one instruction (two codes per bit operation into an fp16 pair, then one fp16-pair
// subtract or multiply-add) and the heads' products are the tensor cores'.
//
// Channels are summed in an order of our choosing: lane t of a quad owns a contiguous
// quarter of the row (its `chunk`), so its A fragments are whole 32-bit words of codes; the
// B table in shared memory lists q * step in that same order. One warp per candidate page,
// 16-token tiles (any block size), pages loaded one page ahead as in estimate_lse.cuh.
#pragma once

#include "common.cuh"
#include "quant_keys.cuh"

namespace tinyserve {

constexpr int kMmaLseWarps = 4;

// Per warp: (D / 16) steps x 8 heads x 4 quads of 8 halves (high b0 b1, then low b0 b1).
__host__ __device__ constexpr int estimate_mma_smem_bytes(int head_dim) { return kMmaLseWarps * 32 * head_dim; }

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

template <typename T, int BITS, int D>
struct MmaLsePage {
  static constexpr int CW = D * BITS / 8 / 4 / 4;  // 32-bit code words of a quad lane's chunk
  int c, n_tok;
  long long blk;
  T lo[4], hi[4];                                  // this lane's B-table channels (see kernel)
  uint32_t w[2][CW];                               // the first tile's codes, rows g and g + 8
};

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

template <typename T, int BITS, int D, int GMAX>
__global__ void __launch_bounds__(kMmaLseWarps * 32, 4)
    estimate_lse_mma_kernel(const __grid_constant__ PageEstimateParams p, int pages_per_warp) {
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  using Page = MmaLsePage<T, BITS, D>;
  constexpr int DQ = D * BITS / 8;        // bytes per quantised row
  constexpr int CB = DQ / 4;              // bytes of a quad lane's chunk
  constexpr int CW = Page::CW;
  constexpr int STEPS = D / 16;
  constexpr float L = float((1 << BITS) - 1);
  // The next page's codes are loaded ahead where registers allow (int8 rows of 128 channels
  // for 8 query heads per kv-head would spill); its metadata always is.
  constexpr bool kCodesAhead = !(GMAX == 8 && CW == 8);
  extern __shared__ __align__(16) uint8_t lse_mma_smem[];
  const int h = blockIdx.y, b = blockIdx.z, G = p.group, H = p.num_kv_heads, BS = p.block_size;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint4* tab = reinterpret_cast<uint4*>(lse_mma_smem) + warp * STEPS * 8 * 4;   // [s][n][t] 8 halves
  // This lane writes the B table of step s = g (lanes g >= STEPS only read), for every head.
  const bool writer = g < STEPS;
  int ch[4];
  step_channels<BITS, D>(writer ? g : 0, t, ch);
  float qv[GMAX][4];
  const float* qg = p.q + ((int64_t)b * p.num_q_heads + h * G) * D;
#pragma unroll
  for (int n = 0; n < GMAX; ++n)
#pragma unroll
    for (int k = 0; k < 4; ++k) qv[n][k] = n < G ? qg[n * D + ch[k]] : 0.f;
  // heads past the group stay zero in the table
  for (int i = lane; i < STEPS * 8 * 4; i += 32)
    if (((i >> 2) & 7) >= G) tab[i] = make_uint4(0, 0, 0, 0);
  const int seq_len = p.seq_lens[b];
  const int c0 = blockIdx.x * kMmaLseWarps * pages_per_warp;
  int my_n;   // lane i: the warp's i-th page
  long long my_blk;
  resolve_page(p, b, h, H, BS, c0 + lane * kMmaLseWarps + warp, lane < pages_per_warp, seq_len, my_n, my_blk);
  // Code rows: page base + this lane's row g and quarter t, rows g + 8 one stride on.
  const int64_t page_bytes = (int64_t)BS * H * DQ;
  const int row_bytes = H * DQ, lane_off = (g * H + h) * DQ + t * CB;
  auto load_rows = [&](long long blk, int row0, int n_tok, uint32_t (&w)[2][CW]) {
    const uint8_t* base = p.qkeys + blk * page_bytes + lane_off + row0 * row_bytes;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + g + 8 * r;
      if (row < n_tok) {
        const uint8_t* src = base + r * 8 * row_bytes;
        if constexpr (CB == 32) {
          const uint4 a = ld_stream(src), c = ld_stream(src + 16);
          w[r][0] = a.x, w[r][1] = a.y, w[r][2] = a.z, w[r][3] = a.w;
          w[r][4] = c.x, w[r][5] = c.y, w[r][6] = c.z, w[r][7] = c.w;
        } else if constexpr (CB == 16) {
          const uint4 a = ld_stream(src);
          w[r][0] = a.x, w[r][1] = a.y, w[r][2] = a.z, w[r][3] = a.w;
        } else {  // 8 bytes: int4 at head_dim 64
          static_assert(CB == 8, "chunk of 8, 16 or 32 bytes");
          const uint2 a = *reinterpret_cast<const uint2*>(src);
          w[r][0] = a.x, w[r][1] = a.y;
        }
      } else {
#pragma unroll
        for (int i = 0; i < CW; ++i) w[r][i] = 0u;
      }
    }
  };
  // A page's min and max on this lane's 4 channels: int8 takes 4 consecutive channels (one
  // 8-byte load each), int4 the pairs (c, c + 1) and (c + 4, c + 5) (two 4-byte loads each).
  auto load_bounds = [&](const T* row, T (&v)[4]) {
    if constexpr (BITS == 8) {
      const uint2 u = *reinterpret_cast<const uint2*>(row + ch[0]);
      memcpy(&v[0], &u.x, 4), memcpy(&v[2], &u.y, 4);
    } else {
      const uint32_t a = *reinterpret_cast<const uint32_t*>(row + ch[0]);
      const uint32_t c = *reinterpret_cast<const uint32_t*>(row + ch[1]);
      memcpy(&v[0], &a, 2), memcpy(&v[2], reinterpret_cast<const char*>(&a) + 2, 2);
      memcpy(&v[1], &c, 2), memcpy(&v[3], reinterpret_cast<const char*>(&c) + 2, 2);
    }
  };
  auto load = [&](int it, Page& P) {
    page_at(it, c0, kMmaLseWarps, warp, my_n, my_blk, P.c, P.n_tok, P.blk);
    if (P.c >= p.num_candidates || P.n_tok <= 0) return;
    const T* mlo = static_cast<const T*>(p.meta) + (P.blk * 2 * H + h) * D;
    if (writer) load_bounds(mlo, P.lo), load_bounds(mlo + (int64_t)H * D, P.hi);
    if (kCodesAhead) load_rows(P.blk, 0, P.n_tok, P.w);
  };
  // Logits in base 2: the softmax runs on ex2/lg2 without the denormal fix-ups of expf/logf.
  const float scale2 = p.scale * 1.4426950408889634f;
  constexpr float kInvL = 1.f / L;   // step = range * (1/L): within an ulp of range / L
  // After bias_scatter, lane `lane` holds the whole bias of head lane / (32 / GMAX); the lanes
  // that start each such run write that head's output.
  constexpr int kRun = 32 / GMAX;
  const int my_head = lane / kRun;
  const bool head_writer = lane % kRun == 0 && my_head < G;
  pipeline_pages<Page>(p, b, h, lane, pages_per_warp, load, [&](const Page& cur, float* out) {
    const int n_tok = cur.n_tok;
    // B table of this page: q * step split into fp16 high and low parts; bias q . lo. Heads
    // past the group have q = 0, so their entries and bias are zero without a branch.
    float bias[GMAX];
    {
      float lo[4], st[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) lo[k] = to_float(cur.lo[k]), st[k] = (to_float(cur.hi[k]) - lo[k]) * kInvL;
#pragma unroll
      for (int n = 0; n < GMAX; ++n) {
        float x[4];
        bias[n] = 0.f;
#pragma unroll
        for (int k = 0; k < 4; ++k) x[k] = qv[n][k] * st[k], bias[n] = fmaf(qv[n][k], lo[k], bias[n]);
        const __half2 h01 = __floats2half2_rn(x[0], x[1]), h23 = __floats2half2_rn(x[2], x[3]);
        const float2 f01 = __half22float2(h01), f23 = __half22float2(h23);
        const __half2 l01 = __floats2half2_rn(x[0] - f01.x, x[1] - f01.y),
                      l23 = __floats2half2_rn(x[2] - f23.x, x[3] - f23.y);
        if (writer) tab[(g * 8 + n) * 4 + t] = make_uint4(h2_bits(h01), h2_bits(h23), h2_bits(l01), h2_bits(l23));
        else bias[n] = 0.f;   // head_dim 64: lanes past the 4 steps repeat step 0's channels
      }
    }
    // The bias is the same for every token of the page, so it leaves the softmax: the page's
    // logsumexp is scale * bias + that of scale * (q * step) . codes. Its warp sum is a
    // reduce-scatter (each butterfly step halves the heads a lane carries): log2(GMAX) + 5
    // shuffle rounds instead of 5 per head, and no per-lane selection of heads 2t, 2t + 1.
    bias_scatter<GMAX>(bias, lane);
    __syncwarp();
    float m[2] = {-INFINITY, -INFINITY}, s[2] = {0.f, 0.f};
    for (int row0 = 0; row0 < n_tok; row0 += 16) {
      uint32_t w[2][CW];
      if (kCodesAhead && row0 == 0) {
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int i = 0; i < CW; ++i) w[r][i] = cur.w[r][i];
      } else {
        load_rows(cur.blk, row0, n_tok, w);
      }
      // Two accumulators (high and low parts) on sm_90: one chained through all 2 * STEPS
      // mmas waited out each mma's latency in turn (on sm_80 the second spilled at int8,
      // head_dim 128, 4 heads, so it stays one chain there).
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
          const uint4 bt = tab[((sp + k) * 8 + g) * 4 + t];
          mma_16816(acc4[0], a[k], bt.x, bt.y);    // high parts of q * step
          mma_16816(acc4[LO], a[k], bt.z, bt.w);   // their fp16 remainders
        }
      }
      // acc: rows g (0, 1) and g + 8 (2, 3), heads 2t (0, 2) and 2t + 1 (1, 3)
      const bool v0 = row0 + g < n_tok, v1 = row0 + g + 8 < n_tok;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float a0 = LO ? acc4[0][e] + acc4[1][e] : acc4[0][e];
        const float a1 = LO ? acc4[0][2 + e] + acc4[1][2 + e] : acc4[0][2 + e];
        const float l0 = v0 ? a0 * scale2 : -INFINITY;
        const float l1 = v1 ? a1 * scale2 : -INFINITY;
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
    __syncwarp();  // the next page rewrites the table
  });
}

// Instances: TINYSERVE_LSE_INSTANCES (estimate_lse.cuh), the same list for both kernels.

}  // namespace tinyserve
