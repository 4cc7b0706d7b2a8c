// Paged decode attention: one query token per sequence over a paged K/V cache.
//
// Work split: one CTA per (split, kv-head, sequence). Its warps stride over 16-token tiles
// of the split's range, and every warp serves all query heads of the kv-head group at once
// with tensor-core MMAs, so each K/V byte is read once per kv-head:
//   S^T[16 tok x 8 heads] = K[16 tok x D] . Q^T[D x 8 heads]        (QK, heads padded to 8)
//   O^T[D x 8 heads]     += V^T[D x 16 tok] . P^T[16 tok x 8 heads]  (PV)
// Both operands come straight from 16-byte global loads held in registers: QK permutes the
// head-dim (any permutation applied to Q and K alike leaves the dot product unchanged) so
// each lane's 16-byte chunk lands in its own fragment slots; V^T and P^T are transposed in
// registers with movmatrix. Loads of tile i+1 are issued before tile i is computed.
// Each warp keeps its own online-softmax state; warps merge through shared memory, and
// splits (flash-decoding) merge in decode_merge_kernel by log-sum-exp (base 2).
#pragma once

#include "common.cuh"

namespace tinyserve {

struct DecodeParams {
  const void* q;             // [B, Hq, D]
  const void* k_cache;       // [NB, BS, Hkv, D]
  const void* v_cache;
  const int* block_tables;   // [B, bt_stride]
  const int* seq_lens;       // [B]
  const int* page_indices;   // [B, Hkv, max_sel] logical pages, -1 pad; nullptr = dense
  void* out;                 // [B, Hq, D]
  float* part_o;             // [B, Hq, num_splits, D]   (num_splits > 1)
  float* part_lse;           // [B, Hq, num_splits]      log2-sum-exp of the scaled logits
  int num_q_heads, num_kv_heads, group;
  int block_size, block_shift;  // block_shift = log2(block_size), or -1 when not a power of 2
  int bt_stride, max_sel;
  int num_splits, chunk_tokens;  // chunk_tokens: virtual tokens per split, a multiple of 16
  float scale_log2;              // softmax scale * log2(e)
};

constexpr int kDecodeWarps = 4;
constexpr int kDecodeTile = 16;
constexpr int kMaxGroup = 8;

template <int D>
struct DecodeTileRegs {
  uint4 k[2][D / 32];  // [lo/hi token][chunk]
  uint4 v[2][D / 32];
  bool ok[2];
};

// Element offset of virtual token `vt`'s K/V row for this kv-head, or -1 when the token is
// outside the split, the context, or the selected pages.
__device__ __forceinline__ int64_t decode_token_row(const DecodeParams& p, int b, int kvh, int vt,
                                                    int v_end, int seq_len, int n_pages, int D) {
  if (vt >= v_end) return -1;
  const int bs = p.block_size;
  const int vp = p.block_shift >= 0 ? (vt >> p.block_shift) : vt / bs;
  const int off = vt - vp * bs;
  int lp = vp;
  if (p.page_indices != nullptr)
    lp = __ldg(p.page_indices + ((int64_t)b * p.num_kv_heads + kvh) * p.max_sel + vp);
  if (lp < 0 || lp >= n_pages || lp * bs + off >= seq_len) return -1;
  const int64_t blk = __ldg(p.block_tables + (int64_t)b * p.bt_stride + lp);
  return ((blk * bs + off) * p.num_kv_heads + kvh) * (int64_t)D;
}

template <typename T, int D, bool L2PF>
__device__ __forceinline__ void decode_load_tile(DecodeTileRegs<D>& r, const DecodeParams& p, int b,
                                                 int kvh, int t0, int v_end, int seq_len,
                                                 int n_pages, int g, int q4) {
  const T* kc = static_cast<const T*>(p.k_cache);
  const T* vc = static_cast<const T*>(p.v_cache);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = decode_token_row(p, b, kvh, t0 + g + 8 * h, v_end, seq_len, n_pages, D);
    r.ok[h] = row >= 0;
#pragma unroll
    for (int j = 0; j < D / 32; ++j) {
      const int64_t e = row + 8 * (q4 + 4 * j);
      // Masked tokens must read as zeros, never as whatever the pool holds (NaN * 0 = NaN).
      r.k[h][j] = r.ok[h] ? ld_stream<L2PF>(kc + e) : make_uint4(0, 0, 0, 0);
      r.v[h][j] = r.ok[h] ? ld_stream<L2PF>(vc + e) : make_uint4(0, 0, 0, 0);
    }
  }
}

__device__ __forceinline__ uint32_t u4_word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Slots of one lane's share of a 16-token tile in the cp.async stage buffers: K and V of
// tokens g and g+8, NJ 16-byte chunks each.
template <int D>
__host__ __device__ constexpr int decode_slots() { return 2 * 2 * (D / 32); }

// Dynamic shared memory of a CTA: the cp.async stages (STAGES > 0), which the final
// merge reuses for its per-warp outputs, or just those outputs.
template <int D, int STAGES>
__host__ __device__ constexpr int decode_smem_bytes() {
  constexpr int merge = kDecodeWarps * kMaxGroup * D * 4;
  constexpr int stages = kDecodeWarps * STAGES * decode_slots<D>() * 32 * 16;
  return stages > merge ? stages : merge;
}

// Issue the asynchronous copies of one tile into this lane's slots of a stage; returns the
// two validity bits (bit h: token g + 8h is inside the split/context/selection).
template <typename T, int D>
__device__ __forceinline__ uint32_t decode_issue_tile(uint4* slot0, const DecodeParams& p, int b, int kvh,
                                                      int t0, int v_end, int seq_len, int n_pages,
                                                      int g, int q4) {
  constexpr int NJ = D / 32;
  const T* kc = static_cast<const T*>(p.k_cache);
  const T* vc = static_cast<const T*>(p.v_cache);
  uint32_t ok = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = decode_token_row(p, b, kvh, t0 + g + 8 * h, v_end, seq_len, n_pages, D);
    const bool in = row >= 0;
    ok |= uint32_t(in) << h;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int64_t e = in ? row + 8 * (q4 + 4 * j) : 0;
      // Masked tokens are zero-filled, never whatever the pool holds (NaN * 0 = NaN).
      cp_async16(slot0 + ((h * NJ + j) * 2 + 0) * 32, kc + e, in ? 16 : 0);
      cp_async16(slot0 + ((h * NJ + j) * 2 + 1) * 32, vc + e, in ? 16 : 0);
    }
  }
  return ok;
}

// One 16-token tile into the warp's online-softmax state (m, l, acc).
template <typename T, int D>
__device__ __forceinline__ void decode_tile_compute(const DecodeTileRegs<D>& cur, const uint32_t (&qf)[D / 16][2],
                                                    float (&m)[2], float (&l)[2], float (&acc)[D / 16][4],
                                                    float scale_log2) {
  constexpr int NJ = D / 32, KS = D / 16, MT = D / 16;
  // Two accumulator chains halve the dependent-MMA latency of the QK product.
  float s[4] = {0.f, 0.f, 0.f, 0.f};  // (tok g, head 2q4), (g, 2q4+1), (g+8, 2q4), (g+8, 2q4+1)
  float s2[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    const int j = ks >> 1, w0 = (ks & 1) ? 2 : 0;
    Mma<T>::run((ks & 1) ? s2 : s, u4_word(cur.k[0][j], w0), u4_word(cur.k[1][j], w0),
                u4_word(cur.k[0][j], w0 + 1), u4_word(cur.k[1][j], w0 + 1), qf[ks][0], qf[ks][1]);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) s[i] = (s[i] + s2[i]) * scale_log2;
  if (!cur.ok[0]) s[0] = s[1] = -INFINITY;
  if (!cur.ok[1]) s[2] = s[3] = -INFINITY;

  float alpha[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    float mx = fmaxf(s[e], s[e + 2]);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
    const float m_new = fmaxf(m[e], mx);
    const float m_use = m_new == -INFINITY ? 0.f : m_new;  // all masked so far: keep exps at 0
    alpha[e] = exp2f(m[e] - m_use);
    s[e] = exp2f(s[e] - m_use);
    s[e + 2] = exp2f(s[e + 2] - m_use);
    l[e] = l[e] * alpha[e] + s[e] + s[e + 2];
    m[e] = m_new;
  }
  // P^T as the B operand of PV: rows = tokens 2q4..2q4+1 (+8), column = head g.
  const uint32_t pb0 = movmatrix_trans(pack2<T>(s[0], s[1]));
  const uint32_t pb1 = movmatrix_trans(pack2<T>(s[2], s[3]));
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    acc[mt][0] *= alpha[0];
    acc[mt][1] *= alpha[1];
    acc[mt][2] *= alpha[0];
    acc[mt][3] *= alpha[1];
  }
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
#pragma unroll
    for (int pp = 0; pp < 2; ++pp) {
      Mma<T>::run(acc[2 * j + pp], movmatrix_trans(u4_word(cur.v[0][j], 2 * pp)),
                  movmatrix_trans(u4_word(cur.v[0][j], 2 * pp + 1)),
                  movmatrix_trans(u4_word(cur.v[1][j], 2 * pp)),
                  movmatrix_trans(u4_word(cur.v[1][j], 2 * pp + 1)), pb0, pb1);
    }
  }
}

// STAGES = 0: tile i+1 is loaded into registers while tile i is computed (L2PF adds the
// 256-byte L2 prefetch hint). STAGES >= 2 (3 is built): each warp streams its tiles through STAGES
// shared-memory buffers with cp.async, STAGES - 1 tiles in flight while one is computed;
// every lane reads back only the slots it copied, so no barrier is needed in the loop.
template <typename T, int D, bool L2PF = false, int STAGES = 0>
__global__ void __launch_bounds__(kDecodeWarps * 32, 2)
paged_decode_kernel(const __grid_constant__ DecodeParams p) {
  constexpr int NJ = D / 32;  // 16-byte chunks per lane per token row
  constexpr int KS = D / 16;  // k-steps of the QK product
  constexpr int MT = D / 16;  // m-tiles of the PV product
  constexpr int SLOTS = decode_slots<D>();

  __shared__ float sm_m[kDecodeWarps][kMaxGroup];
  __shared__ float sm_l[kDecodeWarps][kMaxGroup];
  extern __shared__ uint4 sm_dyn[];
  float(*sm_o)[kMaxGroup][D] = reinterpret_cast<float(*)[kMaxGroup][D]>(sm_dyn);

  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, q4 = lane & 3;
  const int seq_len = p.seq_lens[b];
  const int n_pages = (seq_len + p.block_size - 1) / p.block_size;
  const int nv = p.page_indices != nullptr ? p.max_sel * p.block_size : seq_len;
  const int v_begin = split * p.chunk_tokens;
  const int v_end = min(nv, v_begin + p.chunk_tokens);
  const int hq0 = kvh * p.group;

  // Q as the B operand of QK (column n = head g), head-dim permuted like K's chunks.
  uint32_t qf[KS][2];
  {
    const T* qrow = static_cast<const T*>(p.q) + ((int64_t)b * p.num_q_heads + hq0 + g) * D;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (g < p.group) v = *reinterpret_cast<const uint4*>(qrow + 8 * (q4 + 4 * j));
      qf[2 * j][0] = v.x;
      qf[2 * j][1] = v.y;
      qf[2 * j + 1][0] = v.z;
      qf[2 * j + 1][1] = v.w;
    }
  }

  float m[2] = {-INFINITY, -INFINITY};  // running max of heads 2*q4 + e (log2 domain)
  float l[2] = {0.f, 0.f};              // this lane's share of the running denominators
  float acc[MT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

  constexpr int kStride = kDecodeWarps * kDecodeTile;
  int t0 = v_begin + warp * kDecodeTile;
  if constexpr (STAGES == 0) {
    DecodeTileRegs<D> cur;
    decode_load_tile<T, D, L2PF>(cur, p, b, kvh, t0, v_end, seq_len, n_pages, g, q4);
    for (; t0 < v_end; t0 += kStride) {
      DecodeTileRegs<D> nxt;
      decode_load_tile<T, D, L2PF>(nxt, p, b, kvh, t0 + kStride, v_end, seq_len, n_pages, g, q4);
      decode_tile_compute<T, D>(cur, qf, m, l, acc, p.scale_log2);
      cur = nxt;
    }
  } else {
    uint4* lane_buf = sm_dyn + warp * STAGES * SLOTS * 32 + lane;
    uint32_t okm = 0;  // bits 2*stage + h: validity of the tile copied into each stage
    int t_issue = t0;
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st, t_issue += kStride) {
      if (t_issue < v_end)
        okm |= decode_issue_tile<T, D>(lane_buf + st * SLOTS * 32, p, b, kvh, t_issue, v_end, seq_len,
                                       n_pages, g, q4) << (2 * st);
      cp_async_commit();
    }
    int stage = 0;
    for (; t0 < v_end; t0 += kStride, t_issue += kStride) {
      const int ist = stage == 0 ? STAGES - 1 : stage - 1;  // (stage + STAGES - 1) % STAGES
      okm &= ~(3u << (2 * ist));
      if (t_issue < v_end)
        okm |= decode_issue_tile<T, D>(lane_buf + ist * SLOTS * 32, p, b, kvh, t_issue, v_end, seq_len,
                                       n_pages, g, q4) << (2 * ist);
      cp_async_commit();
      cp_async_wait<STAGES - 1>();  // this lane's copies of `stage` have landed
      DecodeTileRegs<D> cur;
      const uint4* sb = lane_buf + stage * SLOTS * 32;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        cur.ok[h] = (okm >> (2 * stage + h)) & 1u;
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
          cur.k[h][j] = sb[((h * NJ + j) * 2 + 0) * 32];
          cur.v[h][j] = sb[((h * NJ + j) * 2 + 1) * 32];
        }
      }
      decode_tile_compute<T, D>(cur, qf, m, l, acc, p.scale_log2);
      stage = stage == STAGES - 1 ? 0 : stage + 1;
    }
    cp_async_wait<0>();
    __syncthreads();  // sm_o below reuses every warp's stage buffers
  }

#pragma unroll
  for (int e = 0; e < 2; ++e) {
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 4);
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 8);
    l[e] += __shfl_xor_sync(0xffffffffu, l[e], 16);
    if (g == 0) {
      sm_m[warp][2 * q4 + e] = m[e];
      sm_l[warp][2 * q4 + e] = l[e];
    }
  }
  // acc[mt=(j,pp)][c]: head 2q4 + (c&1), d = 32j + 8(g>>1) + 4pp + 2(c>>1) + (g&1).
#pragma unroll
  for (int j = 0; j < NJ; ++j)
#pragma unroll
    for (int pp = 0; pp < 2; ++pp)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        sm_o[warp][2 * q4 + (c & 1)][32 * j + 8 * (g >> 1) + 4 * pp + 2 * (c >> 1) + (g & 1)] =
            acc[2 * j + pp][c];
  __syncthreads();

  for (int idx = threadIdx.x; idx < p.group * D; idx += kDecodeWarps * 32) {
    const int h = idx / D, d = idx - h * D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) mx = fmaxf(mx, sm_m[w][h]);
    float den = 0.f, num = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float wt = exp2f(sm_m[w][h] - mx);
        den += wt * sm_l[w][h];
        num += wt * sm_o[w][h][d];
      }
    }
    const float o = den > 0.f ? num / den : 0.f;
    const int64_t row = (int64_t)b * p.num_q_heads + hq0 + h;
    if (p.num_splits == 1) {
      static_cast<T*>(p.out)[row * D + d] = from_float<T>(o);
    } else {
      p.part_o[(row * p.num_splits + split) * D + d] = o;
      if (d == 0) p.part_lse[row * p.num_splits + split] = den > 0.f ? mx + log2f(den) : -INFINITY;
    }
  }
}

// out[b, h, :] = sum_s 2^(lse_s - lse_max) o_s / sum_s 2^(lse_s - lse_max). One CTA per
// (head, sequence), one thread per output element.
template <typename T, int D>
__global__ void __launch_bounds__(D) decode_merge_kernel(const __grid_constant__ DecodeParams p) {
  const int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
  const int64_t row = (int64_t)b * p.num_q_heads + h;
  const float* lse = p.part_lse + row * p.num_splits;
  const float* po = p.part_o + row * p.num_splits * D + d;
  float mx = -INFINITY;
  for (int s = 0; s < p.num_splits; ++s) mx = fmaxf(mx, lse[s]);
  float den = 0.f, num = 0.f;
  if (mx != -INFINITY) {
    for (int s = 0; s < p.num_splits; ++s) {
      const float ls = lse[s];
      if (ls == -INFINITY) continue;
      const float wt = exp2f(ls - mx);
      den += wt;
      num += wt * po[(int64_t)s * D];
    }
  }
  static_cast<T*>(p.out)[row * D + d] = from_float<T>(den > 0.f ? num / den : 0.f);
}

// Every (dtype, head_dim) the extension builds; CI instantiates the same list.
#define TINYSERVE_DECODE_INSTANCES(X) \
  X(__half, 64)                       \
  X(__half, 128)                      \
  X(__nv_bfloat16, 64)                \
  X(__nv_bfloat16, 128)

}  // namespace tinyserve
