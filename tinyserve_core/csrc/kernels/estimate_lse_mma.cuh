// Stage 2 of the `twostage` selector on tensor cores (spec: quant_reference.page_estimates):
// per query head, the logsumexp over a candidate page's tokens of scale * q . k_hat, with
// k_hat = lo + step * code dequantised from the page's int8/int4 copy (one step per page and
// kv-head: quant_keys.cuh). With one step per page the dot product is
//   q . k_hat = q . lo + step * (q . codes).
//
// q . codes runs on mma.m16n8k16 in the roles of a GEMV: A = the group's queries in fp16
// (row n = query head n; the spec rounds q to fp16, a fp16 model's queries are exact in it;
// rows past the group, and rows 8-15 always, are zero), B = the codes of 8 tokens (exact in
// fp16), fp32 accumulation. A 16-token tile is two mmas a step, and lane (g, t) ends with
// head g's logits of tokens 2t, 2t+1 and 8 + 2t, 9 + 2t: a tile's softmax is a sum in
// registers and two shuffles within the quad. (The fifteenth session's kernel put the codes
// in A and the heads in B's columns, so its softmax summed over eight lane groups, 12
// shuffles a tile; it issued 384 instructions a page at 0.60 a cycle per scheduler, this one
// 351 at 0.71: csrc/NOTES.md.)
// The page's step (its widest channel range over L) and each head's bias q . lo come from
// its min and max rows, a lane's D / 32 channels each, reduced over the warp.
//
// Channels are summed in an order of our choosing: lane t of a quad owns a contiguous
// quarter of the row (its `chunk`), so its B fragments are whole 32-bit words of codes,
// and its A fragments list q in that same order. One warp per candidate page, 16-token
// tiles (any block size), pages through a per-warp ring of cp.async stages.
#pragma once

#include "common.cuh"
#include "quant_keys.cuh"

namespace tinyserve {

constexpr int kMmaLseWarps = 4;
// Ring stages a warp: the page computed + the pages loading (int8: 3, so that the CTA stays
// under 48 KB of shared memory).
__host__ __device__ constexpr int mma_lse_stages(int bits) { return bits == 8 ? 3 : 4; }
// Each step's A tile (16 heads x 16 channels, fp16) in shared memory, rows 48 bytes apart so
// the eight rows an ldmatrix phase reads fall in distinct banks.
constexpr int kQTileRow = 48, kQTileBytes = 16 * kQTileRow;

// A ring stage holds a page's first 16 code rows and its min and max rows.
__host__ __device__ constexpr int estimate_mma_stage_bytes(int head_dim, int bits, int elem_bytes) {
  return 16 * head_dim * bits / 8 + 2 * head_dim * elem_bytes;
}
// Dynamic shared memory: the group's fp32 queries [8][D] (heads past the group zero, for the
// per-page bias q . lo), the A tiles, then each warp's ring. Head_dim 128, fp16: 41,984
// bytes (int8) or 34,816 (int4).
__host__ __device__ constexpr int estimate_mma_smem_bytes(int head_dim, int bits, int elem_bytes) {
  return 8 * head_dim * 4 + head_dim / 16 * kQTileBytes +
         kMmaLseWarps * mma_lse_stages(bits) * estimate_mma_stage_bytes(head_dim, bits, elem_bytes);
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

// The four physical channels of mma step `s` that quad lane t's A entries (columns 2t, 2t+1,
// 2t+8, 2t+9) and B entries (rows the same) stand for, in that order.
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

// A value the compiler must take as computed here: loop-invariant addresses pinned before a
// page loop, which it otherwise sinks into the loop's branches and recomputes every page.
__device__ __forceinline__ int pinned(int x) {
  asm volatile("" : "+r"(x));
  return x;
}
template <typename P>
__device__ __forceinline__ P* pinned(P* x) {
  asm volatile("" : "+l"(x));
  return x;
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
// loads; fifteenth session).
template <typename T, int BITS, int D, int GMAX>
__global__ void __launch_bounds__(kMmaLseWarps * 32, 4)
    estimate_lse_mma_kernel(const __grid_constant__ PageEstimateParams p, int pages_per_warp) {
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  constexpr int DQ = D * BITS / 8;        // bytes per quantised row
  constexpr int CB = DQ / 4;              // bytes of a quad lane's chunk
  constexpr int CW = CB / 4;              // its 32-bit code words
  constexpr int NC = D / 32;              // bound channels a lane (the bias, the range)
  constexpr int STEPS = D / 16;
  constexpr int NS = mma_lse_stages(BITS);
  constexpr int SB = estimate_mma_stage_bytes(D, BITS, sizeof(T));
  constexpr int ROW_CHUNKS = DQ / 16, CPL = 16 * ROW_CHUNKS / 32;   // 16-byte copies a row, a lane
  constexpr int BOUND_CHUNKS = 2 * D * (int)sizeof(T) / 16;
  constexpr float L = float((1 << BITS) - 1);
  static_assert(CPL * 32 == 16 * ROW_CHUNKS, "a page's 16 code rows in whole copies per lane");
  extern __shared__ __align__(16) float lse_mma_q[];   // [8][D], then the A tiles, then the rings
  const int h = blockIdx.y, b = blockIdx.z, G = p.group, H = p.num_kv_heads, BS = p.block_size;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint8_t* qtiles = reinterpret_cast<uint8_t*>(lse_mma_q + 8 * D);
  uint8_t* ring = qtiles + STEPS * kQTileBytes + warp * NS * SB;
  const uint32_t ring_s = static_cast<uint32_t>(__cvta_generic_to_shared(ring));
  const float* qg = p.q + ((int64_t)b * p.num_q_heads + h * G) * D;
  for (int i = threadIdx.x; i < GMAX * D; i += blockDim.x)   // fp16-rounded, as A
    lse_mma_q[i] = i < G * D ? __half2float(__float2half_rn(qg[i])) : 0.f;
  // The A tiles: tile s holds head n's q (fp16; zero past the group and in rows 8-15) in row
  // n, column 2t + e at channel step_channels(s, t)[e] and column 8 + 2t + e at [2 + e]. Each
  // tile reads back as one ldmatrix.x4 per step: ptxas rebuilt A fragments kept in registers
  // into their four-register groups, zeros included, with ~35 moves a tile.
  for (int i = threadIdx.x; i < STEPS * 256; i += blockDim.x) {
    const int st = i >> 8, n = (i >> 4) & 15, k = i & 15;
    int ch[4];
    step_channels<BITS, D>(st, (k & 7) >> 1, ch);
    const int j = 2 * (k >> 3) + (k & 1);   // selects, not an indexed (local-memory) array
    const int c = j == 0 ? ch[0] : j == 1 ? ch[1] : j == 2 ? ch[2] : ch[3];
    const float x = n < G ? qg[n * D + c] : 0.f;
    *reinterpret_cast<__half*>(qtiles + st * kQTileBytes + n * kQTileRow + 2 * k) = __float2half_rn(x);
  }
  // this lane's ldmatrix row: row lane % 16, columns 8 (lane / 16) on
  const uint32_t qtile_s =
      static_cast<uint32_t>(__cvta_generic_to_shared(qtiles)) + (lane & 15) * kQTileRow + (lane >> 4) * 16;
  const int seq_len = p.seq_lens[b];
  const int c0 = blockIdx.x * kMmaLseWarps * pages_per_warp;
  const int64_t page_bytes = (int64_t)BS * H * DQ;
  const int row_bytes = H * DQ;
  // Lane i resolves the warp's i-th page once: its live tokens and the address of its codes
  // (kv-head h's row 0) and bounds, so a page's copies need no address arithmetic beyond
  // shuffles.
  int my_n;
  const uint8_t* my_codes;
  const uint8_t* my_bounds;
  {
    long long blk;
    resolve_page(p, b, h, H, BS, c0 + lane * kMmaLseWarps + warp, lane < pages_per_warp, seq_len, my_n, blk);
    my_codes = p.qkeys + blk * page_bytes + h * DQ;
    my_bounds = static_cast<const uint8_t*>(p.meta) + (blk * 2 * H + h) * D * sizeof(T);
  }
  // This lane's copies of a page: code chunk lane + 32 j, row lane / ROW_CHUNKS + j * RJ;
  // lanes below BOUND_CHUNKS also copy a 16-byte piece of the min row (then the max row).
  constexpr int RJ = 32 / ROW_CHUNKS;
  const int src_off = pinned((lane / ROW_CHUNKS) * row_bytes + (lane % ROW_CHUNKS) * 16);
  const int src_step = pinned(RJ * row_bytes);
  const int bound_off = pinned((lane / (BOUND_CHUNKS / 2)) * H * D * (int)sizeof(T) + (lane % (BOUND_CHUNKS / 2)) * 16);
  const uint32_t lane_st = pinned((int)(ring_s + lane * 16));   // this lane's first copy in stage 0
  auto shfl_ptr = [](const uint8_t* x, int src) {
    return reinterpret_cast<const uint8_t*>(
        __shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(x), src));
  };
  const int n_cand = p.num_candidates;
  // Page it into stage it % NS: code rows 0..15 (rows past the page's tokens zero-filled),
  // then its min and max rows; one commit group per page, empty for pages without tokens.
  auto issue = [&](int it) {
    if (it < pages_per_warp && c0 + it * kMmaLseWarps + warp < n_cand) {
      const int n_tok = __shfl_sync(0xffffffffu, my_n, it);
      const uint8_t* codes = shfl_ptr(my_codes, it);
      const uint8_t* bounds = shfl_ptr(my_bounds, it);
      if (n_tok > 0) {
        const uint32_t st = lane_st + (it % NS) * SB;
#pragma unroll
        for (int j = 0; j < CPL; ++j)
          cp_async16_s(st + 32 * 16 * j, codes + src_off + j * src_step, lane / ROW_CHUNKS + j * RJ < n_tok ? 16 : 0,
                       false);
        if (lane < BOUND_CHUNKS) cp_async16_s(st + 16 * DQ, bounds + bound_off, 16, false);
      }
    }
    cp_async_commit();
  };
  // Logits in base 2: the softmax runs on ex2/lg2 without the denormal fix-ups of expf/logf.
  const float scale2 = p.scale * 1.4426950408889634f;
  constexpr float kInvL = 1.f / L;   // step = range * (1/L): within an ulp of range / L
  const bool writer = t == 0 && g < G;
  // After bias_scatter, lane l holds the whole bias of head l / (32 / GMAX); head g's sits in
  // lane g * (32 / GMAX).
  constexpr int kRun = 32 / GMAX;
  const int bias_src = (g < GMAX ? g : 0) * kRun;
  // this lane's output row (head g; lanes past the group write nothing)
  float* out_row = pinned(p.out + ((int64_t)b * p.num_q_heads + h * G + (g < G ? g : 0)) * n_cand);
  // One 16-token tile of codes (rows g and g + 8 of quarter t in w) into the page's running
  // max m and sum s, in base 2; n_live: the tile's live tokens.
  auto tile = [&](const uint32_t (&w)[2][CW], float sc, int n_live, float& m, float& s) {
    float acc[2][4] = {};   // [tile]: C rows g (entries 0, 1) and g + 8 (2, 3: zero rows of A)
#pragma unroll
    for (int sp = 0; sp < STEPS; sp += (BITS == 8 ? 1 : 2)) {
      uint32_t bf[2][2][2];   // [step within the word][tile][b0, b1]
      if (BITS == 8) {
        codes8(w[0][sp], bf[0][0][0], bf[0][0][1]);
        codes8(w[1][sp], bf[0][1][0], bf[0][1][1]);
      } else {
        uint32_t r0[4], r1[4];
        codes4(w[0][sp >> 1], r0);
        codes4(w[1][sp >> 1], r1);
        bf[0][0][0] = r0[0], bf[0][0][1] = r0[1], bf[1][0][0] = r0[2], bf[1][0][1] = r0[3];
        bf[0][1][0] = r1[0], bf[0][1][1] = r1[1], bf[1][1][0] = r1[2], bf[1][1][1] = r1[3];
      }
#pragma unroll
      for (int k = 0; k < (BITS == 8 ? 1 : 2); ++k) {
        uint32_t a[4];
        ldmatrix_x4(a[0], a[1], a[2], a[3], qtile_s + (sp + k) * kQTileBytes);
        mma_16816(acc[0], a, bf[k][0][0], bf[k][0][1]);
        mma_16816(acc[1], a, bf[k][1][0], bf[k][1][1]);
      }
    }
    // head g's logits of tokens 8 tile + 2t + e; a full tile needs no mask (warp-uniform)
    float l[4] = {acc[0][0] * sc, acc[0][1] * sc, acc[1][0] * sc, acc[1][1] * sc};
    if (n_live < 16) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (8 * (i >> 1) + 2 * t + (i & 1) >= n_live) l[i] = -INFINITY;
    }
    float mx = fmaxf(fmaxf(l[0], l[1]), fmaxf(l[2], l[3]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mn = fmaxf(m, mx);   // finite: the tile's first token is live
    float sum = (ex2_ftz(l[0] - mn) + ex2_ftz(l[1] - mn)) + (ex2_ftz(l[2] - mn) + ex2_ftz(l[3] - mn));
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    s = s * ex2_ftz(m - mn) + sum;   // ex2(-inf) = 0 on the first tile
    m = mn;
  };
  __syncthreads();   // the queries for the bias
#pragma unroll
  for (int i = 0; i < NS - 1; ++i) issue(i);
  for (int it = 0; it < pages_per_warp; ++it) {
    const int c = c0 + it * kMmaLseWarps + warp;
    if (c >= n_cand) break;
    cp_async_wait<NS - 2>();   // page it's group has landed (this lane's copies) ...
    __syncwarp();              // ... and every lane's; the stage read last iteration is free
    issue(it + NS - 1);
    const int n_tok = __shfl_sync(0xffffffffu, my_n, it);
    if (n_tok <= 0) {   // padding, or a page past the context: no mass
      if (writer) out_row[c] = -INFINITY;
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
    const float my_bias = __shfl_sync(0xffffffffu, bias[0], bias_src);
    float m = -INFINITY, s = 0.f;
    {
      uint32_t w[2][CW];   // rows g (tile 0) and g + 8 (tile 1), quarter t, from the stage
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint8_t* src = st + (g + 8 * r) * DQ + t * CB;
#pragma unroll
        for (int i = 0; i < CW; i += 4) {
          const uint4 a = *reinterpret_cast<const uint4*>(src + 4 * i);
          w[r][i] = a.x, w[r][i + 1] = a.y, w[r][i + 2] = a.z, w[r][i + 3] = a.w;
        }
      }
      tile(w, sc, n_tok, m, s);
    }
    // rows 16 on (block sizes over 16) straight from global memory
    if (n_tok > 16) {
      const uint8_t* codes = shfl_ptr(my_codes, it) + t * CB;
      for (int row0 = 16; row0 < n_tok; row0 += 16) {
        uint32_t w[2][CW];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = row0 + g + 8 * r;
#pragma unroll
          for (int i = 0; i < CW; i += 2) {
            const uint2 a = row < n_tok ? *reinterpret_cast<const uint2*>(codes + row * row_bytes + 4 * i)
                                        : make_uint2(0u, 0u);
            w[r][i] = a.x, w[r][i + 1] = a.y;
          }
        }
        tile(w, sc, n_tok - row0, m, s);
      }
    }
    if (writer) out_row[c] = fmaf(my_bias, p.scale, (m + lg2_approx(s)) * 0.6931471805599453f);
  }
  cp_async_wait<0>();   // no copy may land after the CTA is gone
}

// Instances: TINYSERVE_LSE_INSTANCES (estimate_lse.cuh), the same list for both kernels.

}  // namespace tinyserve
