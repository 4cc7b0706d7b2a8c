// Paged decode attention over an FP8 (e4m3) K/V cache with a power-of-two scale per
// (page, kv-head) (kernels/fp8_reference.py is the spec).
//
// Same work split, tile pipeline, online softmax and merges as paged_decode_kernel
// (paged_attention.cuh): the tiles carry half the bytes. Each stage holds the 16 tokens' fp8
// K and V rows plus their pages' K and V scales (looked up with the block table entry). The
// tensor-core MMAs stay fp16: ldmatrix reads 16-bit pairs of fp8 values and each pair
// becomes an f16x2 register with one cvt (every e4m3 value is exact in fp16), so:
//   QK: ldmatrix (no .trans) of a 16-byte chunk gives lane (g, q4) the 4 fp8 values
//       d = 4q4..4q4+3 of token g. The reduction order of QK is free, so the MMA's k slots
//       (2q4, 2q4+1) and (8+2q4, 9+2q4) take d = 4q4, 4q4+1 and 4q4+2, 4q4+3 of the chunk,
//       and Q's fragments are loaded in the same order. The K scale multiplies the logits
//       (fp32), one per token.
//   PV: ldmatrix.trans gives lane (g, q4) d = 2g, 2g+1 of tokens 2q4, 2q4+1; one byte
//       permute makes (token 2q4, 2q4+1) pairs of d = 2g (A row g) and d = 2g+1 (A row g+8),
//       so the accumulator row g of m-tile mt holds d = 16mt + 2g and row g+8 d = 16mt+2g+1.
//       The V scale multiplies the converted pairs (fp16, one per token: the dequantised
//       values have the magnitude of the fp16 values they came from).
// Queries and outputs are fp16 (the wrapper converts bf16). The split merge is
// decode_merge_kernel<__half, D>.
#pragma once

#include <cuda_fp8.h>

#include "paged_attention.cuh"

namespace tinyserve {

// 3 stages a warp (2 tiles in flight, 8.4 KB) and 4 CTAs an SM: the bytes in flight per SM of
// the earlier 5 stages at 2 CTAs, with twice the warps to issue them. At 2 CTAs an SM (1.9
// warps a scheduler) the stream was latency-bound on the tiles' per-byte work (the fp8
// conversions double the instructions per byte of the fp16 kernel): Nsight Compute saw one
// issue every 1.8 cycles and no eligible warp in 43% of them, and 64 x 32K ran at 83% of the
// copy bandwidth; at 4 CTAs it runs at 98% (csrc/NOTES.md, twenty-fourth session).
constexpr int kFp8Stages = 3;
constexpr int kFp8MinCtas = 4;  // __launch_bounds__: at most 128 registers (108-119 used)

// Bytes of one stage: K rows, V rows (16 tokens x D bytes each), then 16 K and 16 V scales.
template <int D>
__host__ __device__ constexpr int fp8_stage_bytes() { return 2 * kDecodeTile * D + 2 * kDecodeTile * 4; }

template <int D>
__host__ __device__ constexpr int fp8_decode_smem_bytes() {
  return decode_smem_bytes_for<D, kFp8Stages, fp8_stage_bytes<D>()>();
}

// Rows of D bytes: 64-byte rows (head_dim 64) swizzle by row bits 1-2 (tile_swz).
template <int D>
__device__ __forceinline__ uint32_t fp8_swz(int r, int c) { return tile_swz<D>(r, c); }

// The two e4m3 values in the low 16 bits of `two` as an f16x2 (low byte -> low half); exact.
__device__ __forceinline__ __half2 e4m3x2_to_h2(uint32_t two) {
  return __half2(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two & 0xffffu), __NV_E4M3));
}
__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ uint32_t e4m3x2_to_half2(uint32_t two) { return h2_bits(e4m3x2_to_h2(two)); }

__device__ __forceinline__ float ld_shared_f32(uint32_t addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
  return v;
}

// The coalesced asynchronous copies of one tile's fp8 K and V rows into a stage, and of the
// tokens' page scales (zeros for masked tokens, whose rows are zero-filled), all in the
// tile's copy group. Returns this lane's validity bits as decode_attend's copies do.
// The scales travel as copies too: loaded into registers and stored, they put a second
// dependent global load (block table, then scale) in front of the row copies of every
// tile, and the stream ran at 66% of the copy bandwidth (twentieth session).
// mine: this lane's token row (lanes < 16; -1: masked), blk: its cache block.
template <int D>
__device__ __forceinline__ uint32_t fp8_issue_tile(uint32_t stage, const DecodeParams& p, const float* scales,
                                                   int kvh, int64_t mine, int64_t blk, int lane) {
  if (lane < kDecodeTile) {
    const int n = mine >= 0 ? 4 : 0;
    const float* ks = scales + (mine >= 0 ? (blk * 2) * p.num_kv_heads + kvh : 0);
    cp_async4(stage + 2 * kDecodeTile * D + 4 * lane, ks, n);
    cp_async4(stage + 2 * kDecodeTile * D + 4 * (kDecodeTile + lane), ks + p.num_kv_heads, n);
  }
  return decode_copy_rows<D>(stage, static_cast<const uint8_t*>(p.k_cache), static_cast<const uint8_t*>(p.v_cache),
                             mine, lane, p.l2_prefetch != 0);
}

// One fp8 tile from a warp's stage into its online-softmax state (see the header comment for
// the fragment layouts). acc[mt][c]: head 2q4 + (c&1), d = 16mt + 2g + (c>>1).
template <int D>
__device__ __forceinline__ void fp8_tile_compute(uint32_t stage, uint32_t ok, const uint32_t (&qf)[D / 16][2],
                                                 DecodeState<D>& st, float scale_log2, int lane) {
  constexpr int KS = D / 16, MT = D / 16;
  const int g = lane >> 2, q4 = lane & 3;
  const uint32_t ksc = stage + 2 * kDecodeTile * D, vsc = ksc + 4 * kDecodeTile;
  // ldmatrix.x4 rows: lanes 0-7 tokens 0-7 and 8-15 tokens 8-15 at chunk 2j, 16-31 likewise at 2j+1.
  const int ar = (lane & 7) + 8 * ((lane >> 3) & 1), ah = lane >> 4;
  float s[4] = {0.f, 0.f, 0.f, 0.f};  // (tok g, head 2q4), (g, 2q4+1), (g+8, 2q4), (g+8, 2q4+1)
  float s2[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int j = 0; j < KS / 2; ++j) {
    uint32_t r[4];
    ldmatrix_x4(r[0], r[1], r[2], r[3], stage + fp8_swz<D>(ar, 2 * j + ah));
#pragma unroll
    for (int h = 0; h < 2; ++h)  // k-step 2j + h: r[2h] tokens g, r[2h+1] tokens g+8
      Mma<__half>::run(h ? s2 : s, e4m3x2_to_half2(r[2 * h]), e4m3x2_to_half2(r[2 * h + 1]),
                       e4m3x2_to_half2(r[2 * h] >> 16), e4m3x2_to_half2(r[2 * h + 1] >> 16), qf[2 * j + h][0],
                       qf[2 * j + h][1]);
  }
  const float k_lo = ld_shared_f32(ksc + 4 * g) * scale_log2, k_hi = ld_shared_f32(ksc + 4 * (g + 8)) * scale_log2;
  s[0] = (s[0] + s2[0]) * k_lo;
  s[1] = (s[1] + s2[1]) * k_lo;
  s[2] = (s[2] + s2[2]) * k_hi;
  s[3] = (s[3] + s2[3]) * k_hi;
  uint32_t pb0, pb1;
  decode_tile_softmax<__half, D>(s, ok, st, pb0, pb1);
  // V scales of the A operand's token pairs: (2q4, 2q4+1) and (8+2q4, 9+2q4)
  const __half2 v_lo = __floats2half2_rn(ld_shared_f32(vsc + 8 * q4), ld_shared_f32(vsc + 8 * q4 + 4));
  const __half2 v_hi = __floats2half2_rn(ld_shared_f32(vsc + 32 + 8 * q4), ld_shared_f32(vsc + 36 + 8 * q4));
  const uint32_t vs = stage + kDecodeTile * D;
#pragma unroll
  for (int j = 0; j < MT / 2; ++j) {
    uint32_t r[4];
    ldmatrix_x4_trans(r[0], r[1], r[2], r[3], vs + fp8_swz<D>(ar, 2 * j + ah));
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // m-tile 2j + h: r[2h] tokens 0-7, r[2h+1] tokens 8-15
      uint32_t a[4];
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        // bytes (t0 d0, t0 d1, t1 d0, t1 d1) -> (t0 d0, t1 d0 | t0 d1, t1 d1)
        const uint32_t pr = __byte_perm(r[2 * h + x], 0u, 0x3120);
        const __half2 sc = x ? v_hi : v_lo;
        a[2 * x] = h2_bits(__hmul2(e4m3x2_to_h2(pr), sc));            // A row g: d = 2g
        a[2 * x + 1] = h2_bits(__hmul2(e4m3x2_to_h2(pr >> 16), sc));  // A row g+8: d = 2g+1
      }
      // a0 (row g, tokens 2q4..) a1 (row g+8, same) a2 (row g, tokens 8+2q4..) a3 (row g+8)
      Mma<__half>::run(st.acc[2 * j + h], a[0], a[1], a[2], a[3], pb0, pb1);
    }
  }
}

struct Fp8DecodeParams {
  DecodeParams base;     // k_cache / v_cache hold e4m3 bytes; q and out are fp16
  const float* scales;   // [NB, 2, Hkv]: page K scale, page V scale per kv-head
};

// WINDOW: the tiles' rows come from DecodeWindow (block sizes a power of 2 >= 16; the launch
// takes it for selected pages), else from a block-table lookup per token.
template <int D, bool WINDOW = false>
__global__ void __launch_bounds__(kDecodeWarps * 32, kFp8MinCtas)
paged_decode_fp8_kernel(const __grid_constant__ Fp8DecodeParams fp) {
  constexpr int KS = D / 16, MT = D / 16;
  const DecodeParams& p = fp.base;
  extern __shared__ uint4 sm_dyn[];

  const DecodeCta cta(p);
  const int kvh = cta.kvh, b = cta.b;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, q4 = lane & 3;

  // Q as the B operand of QK in the permuted k order: k-step ks holds d = 16ks + 4q4 (+1)
  // and 16ks + 4q4 + 2 (+3); padding heads (g >= group) are zero.
  uint32_t qf[KS][2];
  {
    const __half* qrow = static_cast<const __half*>(p.q) + ((int64_t)b * p.num_q_heads + kvh * p.group + g) * D;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const uint2 q = g < p.group ? *reinterpret_cast<const uint2*>(qrow + 16 * ks + 4 * q4) : make_uint2(0u, 0u);
      qf[ks][0] = q.x;
      qf[ks][1] = q.y;
    }
  }
  DecodeState<D> st;
  constexpr uint32_t SB = fp8_stage_bytes<D>();
  const uint32_t wbuf = static_cast<uint32_t>(__cvta_generic_to_shared(sm_dyn)) + warp * kFp8Stages * SB;
  auto compute = [&](uint32_t stage, uint32_t ok) { fp8_tile_compute<D>(stage, ok, qf, st, p.scale_log2, lane); };
  if constexpr (WINDOW) {
    DecodeWindow<D> win(p, cta);
    decode_stream_tiles<kFp8Stages>(
        wbuf, SB, cta.v_begin + warp * kDecodeTile, cta.v_end,
        [&](uint32_t stage, int t) {
          int blk;
          const int64_t mine = win.row(t, blk);
          return fp8_issue_tile<D>(stage, p, fp.scales, kvh, mine, blk, lane);
        },
        compute);
  } else {
    decode_stream_tiles<kFp8Stages>(
        wbuf, SB, cta.v_begin + warp * kDecodeTile, cta.v_end,
        [&](uint32_t stage, int t) {
          int64_t blk = 0;
          const int64_t mine =
              lane < kDecodeTile ? decode_token_row(p, b, kvh, t + lane, cta.v_end, cta.seq_len, cta.n_pages, D, &blk)
                                 : -1;
          return fp8_issue_tile<D>(stage, p, fp.scales, kvh, mine, blk, lane);
        },
        compute);
  }
  decode_finish<__half, D>(p, st, sm_dyn, b, kvh, cta.split, [&](float(*o)[D]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) o[2 * q4 + (c & 1)][16 * mt + 2 * g + (c >> 1)] = st.acc[mt][c];
  });
}

#define TINYSERVE_FP8_DECODE_INSTANCES(X) \
  X(64)                                   \
  X(128)

}  // namespace tinyserve
