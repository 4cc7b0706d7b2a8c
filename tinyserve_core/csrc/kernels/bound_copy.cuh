// The int8 page-bound copy of the twostage selector (spec: tinyserve_core/kernels/bound_copy_reference.py).
//   qbounds [NB, Hkv, 2D + 32] uint8: bytes [0, D) hi8, [D, 2D) lo8, then mn, s (float32) and zeros;
//   the box mn + s * code holds the page's fp16 min/max box (rounded outward with a margin of
//   2^-20 (|min| + |max|), s = (max - min + 2 margin) / 254).
// bound_copy_encode writes one (page, kv-head) row (called by quantize_keys_kernel, which knows
// the pages a write touched). page_scores_copy_kernel is twostage's stage 1: Quest's bound
// q+ . hi + q- . lo over the copy, with the query on an int8 grid rounded up, as one IMMA GEMV:
// A = 16 pages' rows (u8, m16n8k32), B = the group's query heads (s8, up to 8 columns), so a
// 16-page tile is D / 16 mmas and the kernel only streams bytes (half of what page_scores reads).
#pragma once

#include "common.cuh"

namespace tinyserve {

constexpr int kBoundHeader = 32;      // bytes after the 2D codes: rows of whole 32-byte sectors
constexpr float kBoxLevels = 254.f;   // one code of headroom: hi8 never clamps
constexpr float kBoxTol = 0x1p-20f;   // the box's margin, relative to |min| + |max|
constexpr float kQueryLevels = 126.f; // the query grid's scale (codes within [-127, 127])
constexpr float kScoreSlack = 0x1p-16f;  // the score's margin for its float rounding (head_dim <= 128)

__host__ __device__ __forceinline__ int bound_row_bytes(int D) { return 2 * D + kBoundHeader; }

// One row from the page's min/max (float, D channels) and the head's mn0 = min_i lo_i,
// mx0 = max_i hi_i. Threads [tid, D) step `nthreads`; the reference's operations in its order
// (IEEE division, no contraction), so rows match it byte for byte.
template <typename T>
__device__ __forceinline__ void bound_copy_encode(const T* lo, const T* hi, float mn0, float mx0, uint8_t* row,
                                                  int D, int tid, int nthreads) {
  const float tol = __fmul_rn(__fadd_rn(fabsf(mn0), fabsf(mx0)), kBoxTol);
  const float mn = __fsub_rn(mn0, tol);
  const float s = __fdiv_rn(__fsub_rn(__fadd_rn(mx0, tol), mn), kBoxLevels);
  const bool flat = !(s > 0.f);
  const float sd = flat ? 1.f : s;
  for (int i = tid; i < D; i += nthreads) {
    const float l = to_float(lo[i]), h = to_float(hi[i]);
    float l8 = fminf(fmaxf(floorf(__fdiv_rn(__fsub_rn(l, mn), sd)), 0.f), kBoxLevels + 1.f);
    float h8 = fminf(fmaxf(ceilf(__fdiv_rn(__fsub_rn(h, mn), sd)), 0.f), kBoxLevels + 1.f);
    // within tol of the box steps outward: tol is ~8 ulps of the ends, more than this check's rounding
    if (__fadd_rn(mn, __fmul_rn(sd, l8)) > __fsub_rn(l, tol)) l8 = fmaxf(l8 - 1.f, 0.f);
    if (__fadd_rn(mn, __fmul_rn(sd, h8)) < __fadd_rn(h, tol)) h8 = fminf(h8 + 1.f, 255.f);
    row[i] = flat ? 0 : (uint8_t)h8;
    row[D + i] = flat ? 0 : (uint8_t)l8;
  }
  if (tid == 0) {
    float* head = reinterpret_cast<float*>(row + 2 * D);
    head[0] = mn;
    head[1] = flat ? 0.f : s;
#pragma unroll
    for (int z = 2; z < kBoundHeader / 4; ++z) head[z] = 0.f;
  }
}

struct PageScoresCopyParams {
  const void* q;             // [B, Hq, D] float32, fp16 or bf16
  const uint8_t* qbounds;    // [NB, Hkv, 2D + 32]
  const int* block_tables;   // [B, bt_stride]
  const int* seq_lens;       // [B]
  float* out;                // [B, Hkv, bt_stride]
  int num_kv_heads, group, block_size, bt_stride;
  float scale;
  int tiles_per_warp;        // 16-page tiles a warp: the query setup is paid once for them
};

constexpr int kCopyScoreWarps = 4;
constexpr int kCopyScoreTiles = 8;   // tiles a warp at most unless the caller asks (halved on small grids)

// sm_80+ (as the cp.async the other twostage kernels use)
__device__ __forceinline__ void imma_u8s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Lane (g, t) owns, of every 64-byte chunk i of a row, bytes [16t, 16t + 16): step s of the
// GEMV reads chunk s / 2, its 8 bytes (s % 2) * 8.., as k-indices 4t.. (a0/b0) and 16 + 4t..
// (a2/b1), on both operands alike, so the permutation cancels in the dot product. A chunk
// i < D / 64 holds hi8 (paired with q+), the rest lo8 (with q-), channel (i mod D/64) * 64 + 16t + e.
template <typename T, int D>
__global__ void __launch_bounds__(32 * kCopyScoreWarps)
    page_scores_copy_kernel(const __grid_constant__ PageScoresCopyParams p) {
  constexpr int kChunks = D / 32, kHalf = D / 64, kSteps = D / 16, kRow = 2 * D + kBoundHeader;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int row = blockIdx.x;                       // b * Hkv + kv-head
  const int b = row / p.num_kv_heads, kvh = row - b * p.num_kv_heads;
  const int M = p.bt_stride;
  const int ntiles = (M + 15) >> 4;
  const int tile0 = (blockIdx.y * kCopyScoreWarps + (threadIdx.x >> 5)) * p.tiles_per_warp;
  if (tile0 >= ntiles) return;
  const int npages = min((p.seq_lens[b] + p.block_size - 1) / p.block_size, M);
  const int* bt = p.block_tables + (int64_t)b * M;
  // the first tile's block ids, in flight while the query grid is built
  int blk[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int m = tile0 * 16 + g + 8 * r;
    blk[r] = m < npages ? bt[m] : -1;
  }

  // The query grid of head g (lanes g >= group carry zeros): amax and sum over the quad.
  const bool live_head = g < p.group;
  const T* qh = static_cast<const T*>(p.q) +
                ((int64_t)b * p.num_kv_heads * p.group + kvh * p.group + (live_head ? g : 0)) * D;
  float qv[kHalf][16];
  float amax = 0.f, qsum = 0.f, qabs = 0.f;
#pragma unroll
  for (int j = 0; j < kHalf; ++j) {
#pragma unroll
    for (int v = 0; v < 2; ++v) {
      float f[8];
      if (live_head) load8(qh + j * 64 + t * 16 + 8 * v, f);
#pragma unroll
      for (int e = 0; e < 8; ++e) qv[j][8 * v + e] = live_head ? f[e] : 0.f;
    }
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      amax = fmaxf(amax, fabsf(qv[j][e]));
      qsum += qv[j][e];
      qabs += fabsf(qv[j][e]);
    }
  }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    qsum += __shfl_xor_sync(0xffffffffu, qsum, o);
    qabs += __shfl_xor_sync(0xffffffffu, qabs, o);
  }
  const float sq = __fdiv_rn(amax, kQueryLevels);
  const float rq = amax > 0.f ? __fdiv_rn(kQueryLevels, amax) : 0.f;
  uint32_t bq[kSteps][2];
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    const int i = s >> 1, j = i % kHalf;
    const bool hi_half = i < kHalf;
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      uint32_t word = 0u;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = qv[j][(s & 1) * 8 + w * 4 + e];
        const float c = ceilf(__fmul_rn(hi_half ? fmaxf(x, 0.f) : fminf(x, 0.f), rq));
        word |= (uint32_t)(uint8_t)(int8_t)(int)c << (8 * e);
      }
      bq[s][w] = word;
    }
  }
  // this lane's output heads 2t, 2t + 1: their scale and channel sum from lanes (2t, 0), (2t + 1, 0)
  float hs[2], hq[2], ha[2];
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    hs[c] = __shfl_sync(0xffffffffu, sq, (2 * t + c) * 4);
    hq[c] = __shfl_sync(0xffffffffu, qsum, (2 * t + c) * 4);
    ha[c] = __fmul_rn(__shfl_sync(0xffffffffu, qabs, (2 * t + c) * 4), kScoreSlack);
  }
  const bool head_ok[2] = {2 * t < p.group, 2 * t + 1 < p.group};

  float* out = p.out + (int64_t)row * M;
  const int tile_end = min(tile0 + p.tiles_per_warp, ntiles);
  for (int tile = tile0; tile < tile_end; ++tile) {
    // pages g and g + 8 of the tile: D / 32 16-byte loads each, and their mn, s
    uint4 a[2][kChunks];
    float2 ms[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint8_t* src = p.qbounds + ((int64_t)max(blk[r], 0) * p.num_kv_heads + kvh) * kRow;
#pragma unroll
      for (int i = 0; i < kChunks; ++i)
        a[r][i] = blk[r] >= 0 ? ld_stream(src + i * 64 + t * 16) : make_uint4(0u, 0u, 0u, 0u);
      ms[r] = blk[r] >= 0 ? *reinterpret_cast<const float2*>(src + 2 * D) : make_float2(0.f, 0.f);
    }
    // the next tile's block ids, behind this tile's rows
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int m = (tile + 1) * 16 + g + 8 * r;
      blk[r] = tile + 1 < tile_end && m < npages ? bt[m] : -1;
    }
    int acc[4] = {0, 0, 0, 0};
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      const uint4& x = a[0][s >> 1];
      const uint4& y = a[1][s >> 1];
      const uint32_t frag[4] = {(s & 1) ? x.z : x.x, (s & 1) ? y.z : y.x, (s & 1) ? x.w : x.y,
                                (s & 1) ? y.w : y.y};
      imma_u8s8(acc, frag, bq[s][0], bq[s][1]);
    }
    // acc: (page g, heads 2t, 2t+1), (page g + 8, the same heads); the reference's order of operations
    float best[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      best[r] = -INFINITY;
#pragma unroll
      // |mn| + 255 s: the largest magnitude a box value can have, for the slack term
      const float span = __fadd_rn(fabsf(ms[r].x), __fmul_rn(ms[r].y, 255.f));
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float a = __fmul_rn(ms[r].x, hq[c]);
        const float b = __fmul_rn(ms[r].y, __fmul_rn(hs[c], (float)acc[2 * r + c]));
        const float u = __fadd_rn(__fadd_rn(a, b), __fmul_rn(ha[c], span));
        if (head_ok[c]) best[r] = fmaxf(best[r], u);
      }
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) best[r] = fmaxf(best[r], __shfl_xor_sync(0xffffffffu, best[r], o));
    }
    if (t < 2) {
      const int m = tile * 16 + g + 8 * t;
      if (m < M) out[m] = m < npages ? best[t] * p.scale : -INFINITY;
    }
  }
}

// the query's dtype x head_dim, as page_scores
#define TINYSERVE_BOUND_COPY_INSTANCES(X) TINYSERVE_DTYPE_HEAD_DIMS(X)

}  // namespace tinyserve
