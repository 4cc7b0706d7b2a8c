// Paged decode attention: one query token per sequence over a paged K/V cache.
//
// Work split: one CTA per (split, kv-head, sequence). Its warps stride over 16-token tiles
// of the split's range, and every warp serves all query heads of the kv-head group at once
// with tensor-core MMAs, so each K/V byte is read once per kv-head:
//   S^T[16 tok x 8 heads] = K[16 tok x D] . Q^T[D x 8 heads]        (QK, heads padded to 8)
//   O^T[D x 8 heads]     += V^T[D x 16 tok] . P^T[16 tok x 8 heads]  (PV)
// Default path: each warp streams its tiles through a 3-stage shared-memory ring with
// cp.async, two tiles in flight while one is computed. Copies are coalesced (16 lanes cover
// one 256-byte K/V row), rows land XOR-swizzled by 16-byte chunk, and ldmatrix reads the MMA
// fragments back without bank conflicts (.trans yields V^T). P^T is transposed in registers
// with movmatrix. (A register path that loaded tile i+1 in fragment order while computing
// tile i ran 2-5% slower on an H100 at every shape measured, see NOTES.md.)
// Each warp keeps its own online-softmax state; warps merge through shared memory, and
// splits (flash-decoding) merge by log-sum-exp (base 2): in the kernel, by the last CTA of
// each (sequence, kv-head) row to finish (a counter per row), or in decode_merge_kernel.
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
  int* split_counters;       // [B * Hkv] zeros: the row's last CTA merges its splits and
                             // resets the count; nullptr: decode_merge_kernel merges
  int num_q_heads, num_kv_heads, group;
  int block_size, block_shift;  // block_shift = log2(block_size), or -1 when not a power of 2
  int bt_stride, max_sel;
  int num_splits, chunk_tokens;  // chunk_tokens: virtual tokens per split, a multiple of 16
  float scale_log2;              // softmax scale * log2(e)
  int l2_prefetch;               // K/V copies carry the L2::256B hint (per-device tuning)
};

constexpr int kDecodeWarps = 4;
constexpr int kDecodeTile = 16;
constexpr int kMaxGroup = 8;
constexpr int kDecodeStages = 3;  // tiles in flight per warp: kDecodeStages - 1

// Element offset of the K/V row of token `off` of logical page `lp` for this kv-head, or -1
// when the page is padding (-1) or the token lies past the context. `blk_out` (when given)
// receives the physical block id (the FP8 kernel's page scales are per block).
__device__ __forceinline__ int64_t decode_page_row(const DecodeParams& p, int b, int kvh, int lp, int off,
                                                   int seq_len, int n_pages, int D, int64_t* blk_out = nullptr) {
  const int bs = p.block_size;
  if (lp < 0 || lp >= n_pages || lp * bs + off >= seq_len) return -1;
  const int64_t blk = __ldg(p.block_tables + (int64_t)b * p.bt_stride + lp);
  if (blk_out != nullptr) *blk_out = blk;
  return ((blk * bs + off) * p.num_kv_heads + kvh) * (int64_t)D;
}

// Element offset of virtual token `vt`'s K/V row for this kv-head, or -1 when the token is
// outside the split, the context, or the selected pages.
__device__ __forceinline__ int64_t decode_token_row(const DecodeParams& p, int b, int kvh, int vt,
                                                    int v_end, int seq_len, int n_pages, int D,
                                                    int64_t* blk_out = nullptr) {
  if (vt >= v_end) return -1;
  const int bs = p.block_size;
  const int vp = p.block_shift >= 0 ? (vt >> p.block_shift) : vt / bs;
  const int off = vt - vp * bs;
  int lp = vp;
  if (p.page_indices != nullptr)
    lp = __ldg(p.page_indices + ((int64_t)b * p.num_kv_heads + kvh) * p.max_sel + vp);
  return decode_page_row(p, b, kvh, lp, off, seq_len, n_pages, D, blk_out);
}

// Bytes of one warp's stage: the K and V rows of a 16-token tile (16-bit elements).
template <int D>
__host__ __device__ constexpr int decode_stage_bytes() { return 2 * kDecodeTile * D * 2; }

// Dynamic shared memory of a CTA of STAGES stages per warp: the cp.async stages, which the
// final merge reuses for its per-warp outputs.
template <int D, int STAGES, int STAGE_BYTES>
__host__ __device__ constexpr int decode_smem_bytes_for() {
  constexpr int merge = kDecodeWarps * kMaxGroup * D * 4;
  constexpr int stages = kDecodeWarps * STAGES * STAGE_BYTES;
  return stages > merge ? stages : merge;
}
template <int D>
__host__ __device__ constexpr int decode_smem_bytes() {
  return decode_smem_bytes_for<D, kDecodeStages, decode_stage_bytes<D>()>();
}

// Byte offset of 16-byte chunk `c` of row `r` of a tile of ROW_BYTES-byte rows: chunks are
// XOR-swizzled by the row's low 3 bits (64-byte rows: by bits 1-2, two rows share a 128-byte
// bank line), so the 8 rows one ldmatrix reads at one chunk hit 8 distinct bank groups.
template <int ROW_BYTES>
__device__ __forceinline__ uint32_t tile_swz(int r, int c) {
  constexpr int NCH = ROW_BYTES / 16;
  static_assert(NCH >= 4, "rows of at least 64 bytes");
  constexpr int S = NCH >= 8 ? 0 : 1, M = (NCH >= 8 ? 8 : NCH) - 1;
  return uint32_t(r * ROW_BYTES + 16 * (c ^ ((r >> S) & M)));
}
template <int D>
__device__ __forceinline__ uint32_t decode_swz(int r, int c) { return tile_swz<2 * D>(r, c); }

// The coalesced asynchronous copies of one tile's K rows, then V rows (ROW_BYTES each), into
// a warp's stage: lane i < 16 holds the element offset `mine` of token i's row (-1: outside
// the split/context/selection); ROW_BYTES/16 lanes copy a row. Returns this lane's validity
// bits (bit h: token g + 8h). l2_256: the copies' L2 prefetch hint (cp_async16_s).
template <int ROW_BYTES, typename E>
__device__ __forceinline__ uint32_t decode_copy_rows(uint32_t stage, const E* kc, const E* vc, int64_t mine,
                                                     int lane, bool l2_256) {
  constexpr int NCH = ROW_BYTES / 16, RPI = 32 / NCH;  // chunks per row, rows per copy instruction
  const int c = lane % NCH, r0 = lane / NCH;
#pragma unroll
  for (int i = 0; i < kDecodeTile / RPI; ++i) {
    const int r = i * RPI + r0;
    const int64_t row = __shfl_sync(0xffffffffu, mine, r);
    const bool in = row >= 0;
    const int64_t e = in ? row + (16 / sizeof(E)) * c : 0;
    const uint32_t off = tile_swz<ROW_BYTES>(r, c);
    // Masked tokens are zero-filled, never whatever the pool holds (NaN * 0 = NaN).
    cp_async16_s(stage + off, kc + e, in ? 16 : 0, l2_256);
    cp_async16_s(stage + kDecodeTile * ROW_BYTES + off, vc + e, in ? 16 : 0, l2_256);
  }
  const int g = lane >> 2;
  return uint32_t(__shfl_sync(0xffffffffu, mine, g) >= 0) |
         (uint32_t(__shfl_sync(0xffffffffu, mine, g + 8) >= 0) << 1);
}

// A decode CTA's place: its (split, kv-head, sequence) and the sequence's range of virtual
// tokens [v_begin, v_end) it attends (selected pages' tokens in the sparse variant). Waits
// for the previous grid first: the inputs may be its output.
struct DecodeCta {
  int split, kvh, b, seq_len, n_pages, v_begin, v_end;
  __device__ explicit DecodeCta(const DecodeParams& p) : split(blockIdx.x), kvh(blockIdx.y), b(blockIdx.z) {
    pdl_entry();
    seq_len = p.seq_lens[b];
    n_pages = (seq_len + p.block_size - 1) / p.block_size;
    const int nv = p.page_indices != nullptr ? p.max_sel * p.block_size : seq_len;
    // Dense: the sequence's own tiles are shared evenly by the grid's splits. The split
    // count is planned for the block table's width, which inside a CUDA graph is the
    // model's longest context (8,192 pages for a 128K model): chunks of width / splits
    // left a batch-1 step at 8K context to 3 splits of 4K tokens each per kv-head (65 us
    // against 8 us of bytes, H200). The selected-pages variant has a fixed-width list.
    int chunk = p.chunk_tokens;
    if (p.page_indices == nullptr) {
      const int tiles = (seq_len + kDecodeTile - 1) / kDecodeTile;
      chunk = (tiles + p.num_splits - 1) / p.num_splits * kDecodeTile;
    }
    v_begin = split * chunk;
    v_end = min(nv, v_begin + chunk);
  }
};

// Online softmax of one tile's logits s (tokens g, g+8 x heads 2q4, 2q4+1, log2 domain,
// already scaled): updates (m, l), turns s into probabilities and returns the accumulator
// rescale factors of heads 2q4, 2q4+1 (alpha) and P^T as the PV B operand (pb).
template <typename T>
__device__ __forceinline__ void decode_softmax(float (&s)[4], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                               uint32_t& pb0, uint32_t& pb1) {
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
  pb0 = movmatrix_trans(pack2<T>(s[0], s[1]));
  pb1 = movmatrix_trans(pack2<T>(s[2], s[3]));
}

template <int MT>
__device__ __forceinline__ void decode_rescale(float (&acc)[MT][4], const float (&alpha)[2]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    acc[mt][0] *= alpha[0];
    acc[mt][1] *= alpha[1];
    acc[mt][2] *= alpha[0];
    acc[mt][3] *= alpha[1];
  }
}

// A warp's online-softmax state over its tiles: running max and this lane's share of the
// denominators of heads 2q4, 2q4+1 (log2 domain), and its output accumulators.
template <int D>
struct DecodeState {
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};
  float acc[D / 16][4] = {};
};

// One tile's scaled logits s into the state: tokens outside the split/context/selection
// (validity bits `ok`) masked, probabilities in s, the accumulators rescaled; P^T as the PV
// B operand (pb0, pb1).
template <typename T, int D>
__device__ __forceinline__ void decode_tile_softmax(float (&s)[4], uint32_t ok, DecodeState<D>& st, uint32_t& pb0,
                                                    uint32_t& pb1) {
  if (!(ok & 1u)) s[0] = s[1] = -INFINITY;
  if (!(ok & 2u)) s[2] = s[3] = -INFINITY;
  float alpha[2];
  decode_softmax<T>(s, st.m, st.l, alpha, pb0, pb1);
  decode_rescale<D / 16>(st.acc, alpha);
}

// One tile from a warp's stage into its online-softmax state (m, l, acc). Q fragments:
// the accumulator's fragment (mt, c) holds d = 16 mt + g + 8 (c >> 1), head 2 q4 + (c & 1).
template <typename T, int D>
__device__ __forceinline__ void decode_tile_compute(uint32_t stage, uint32_t ok, const uint32_t (&qf)[D / 16][2],
                                                    DecodeState<D>& st, float scale_log2, int lane) {
  constexpr int KS = D / 16, MT = D / 16;
  float s[4] = {0.f, 0.f, 0.f, 0.f};  // (tok g, head 2q4), (g, 2q4+1), (g+8, 2q4), (g+8, 2q4+1)
  float s2[4] = {0.f, 0.f, 0.f, 0.f};
  // A = K[16 tok x 16 d]: lanes 0-15 address rows 0-15 at the k-step's first chunk, 16-31 the second.
  const int ar = lane & 15, ah = lane >> 4;
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    uint32_t a0, a1, a2, a3;
    ldmatrix_x4(a0, a1, a2, a3, stage + decode_swz<D>(ar, 2 * ks + ah));
    Mma<T>::run((ks & 1) ? s2 : s, a0, a1, a2, a3, qf[ks][0], qf[ks][1]);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) s[i] = (s[i] + s2[i]) * scale_log2;
  uint32_t pb0, pb1;
  decode_tile_softmax<T, D>(s, ok, st, pb0, pb1);
  // A = V^T[16 d x 16 tok] by ldmatrix.trans of V rows: lanes 0-7 tokens 0-7 at the m-tile's
  // first chunk, 8-15 the same tokens at its second chunk, 16-31 tokens 8-15 likewise.
  const uint32_t vs = stage + kDecodeTile * D * 2;
  const int vr = (lane & 7) + 8 * (lane >> 4), vh = (lane >> 3) & 1;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    uint32_t a0, a1, a2, a3;
    ldmatrix_x4_trans(a0, a1, a2, a3, vs + decode_swz<D>(vr, 2 * mt + vh));
    Mma<T>::run(st.acc[mt], a0, a1, a2, a3, pb0, pb1);
  }
}

// Merges the num_splits partial results of one output row (row = b * Hq + head) by
// log-sum-exp. kMergeParts threads share each group of 4 output elements, each summing
// every kMergeParts-th split, so a thread's loads (a few splits, all issued together)
// cost one or two memory latencies instead of one per split in turn (a batch-1 step has
// 33 splits: 7 us per merge on an H200 with one thread per 4 elements).
constexpr int kMergeParts = 4;
constexpr int kMergeBatch = 8;  // splits a thread loads at once (the merge kernel: all of them up to 32)

// num += w * o, and out[0..3] = num * inv: the merges' per-4-element steps.
__device__ __forceinline__ void merge_acc4(float4& num, float w, const float4& o) {
  num.x += w * o.x;
  num.y += w * o.y;
  num.z += w * o.z;
  num.w += w * o.w;
}
// A running (den, num) of a merge re-based from log2-max `from` to `to` (>= from; -inf: empty).
__device__ __forceinline__ void merge_rebase(float& den, float4& num, float from, float to) {
  const float a = from == -INFINITY ? 0.f : exp2f(from - to);
  den *= a;
  num.x *= a;
  num.y *= a;
  num.z *= a;
  num.w *= a;
}
template <typename T>
__device__ __forceinline__ void merge_store4(T* out, const float4& num, float inv) {
  out[0] = from_float<T>(num.x * inv);
  out[1] = from_float<T>(num.y * inv);
  out[2] = from_float<T>(num.z * inv);
  out[3] = from_float<T>(num.w * inv);
}

// Splits first, first + stride, ... (< S) of one output row's vector d4 (lse: the row's S
// log-sum-exps, po: its S partial vectors at d4) folded into a running (max, den, num) with
// rescaling, the log-sum-exps and vectors of kMergeBatch splits loaded together: a merge of up
// to kMergeBatch splits a thread waits on one memory round trip. (The merges used to take the
// max over all splits first, then the weights, then the vectors: three dependent rounds, and
// the merge kernel three barriers, 2.4 us of a 18.5 us sparse step at batch 1 on an H200.)
// CG: the partials were written in this launch by other CTAs, read through L2 (`__ldcg`: the
// non-coherent path may hold stale lines); else they come from an earlier kernel (`__ldg`).
template <int D, bool CG>
__device__ __forceinline__ void merge_fold_splits(const float* lse, const float4* po, int S, int first, int stride,
                                                  float& mx, float& den, float4& num) {
  for (int s0 = first; s0 < S; s0 += stride * kMergeBatch) {
    float ls[kMergeBatch];
    float4 o[kMergeBatch];
#pragma unroll
    for (int j = 0; j < kMergeBatch; ++j) {
      const int s = s0 + j * stride;
      ls[j] = s >= S ? -INFINITY : CG ? __ldcg(lse + s) : __ldg(lse + s);
      o[j] = s >= S ? make_float4(0.f, 0.f, 0.f, 0.f) : CG ? __ldcg(po + (int64_t)s * (D / 4)) : __ldg(po + (int64_t)s * (D / 4));
    }
    float m = mx;
#pragma unroll
    for (int j = 0; j < kMergeBatch; ++j) m = fmaxf(m, ls[j]);
    if (m == -INFINITY) continue;  // every split so far empty
    merge_rebase(den, num, mx, m);
#pragma unroll
    for (int j = 0; j < kMergeBatch; ++j) {
      const float w = ls[j] == -INFINITY ? 0.f : exp2f(ls[j] - m);
      den += w;
      merge_acc4(num, w, o[j]);
    }
    mx = m;
  }
}

// One output row (row = b * Hq + head) by the merge kernel's CTA: kMergeParts threads share
// each vector of 4 outputs, each folding every kMergeParts-th split; the parts then meet in
// shared memory, rescaled to the largest max (one barrier).
template <typename T, int D>
__device__ __forceinline__ void decode_merge_row(const DecodeParams& p, int64_t row) {
  __shared__ float4 sm_num[kMergeParts][D / 4];
  __shared__ float sm_den[kMergeParts], sm_max[kMergeParts];
  const int S = p.num_splits;
  const int d4 = threadIdx.x % (D / 4), part = threadIdx.x / (D / 4);
  float mx = -INFINITY, den = 0.f;
  float4 num = make_float4(0.f, 0.f, 0.f, 0.f);
  merge_fold_splits<D, false>(p.part_lse + row * S, reinterpret_cast<const float4*>(p.part_o + row * S * D) + d4, S,
                              part, kMergeParts, mx, den, num);
  sm_num[part][d4] = num;
  if (d4 == 0) {
    sm_den[part] = den;
    sm_max[part] = mx;
  }
  __syncthreads();
  if (part != 0) return;
  float m = mx;
#pragma unroll
  for (int q = 1; q < kMergeParts; ++q) m = fmaxf(m, sm_max[q]);
  if (m == -INFINITY) {  // no split saw a token: zeros, as the kernel's own empty rows
    merge_store4(static_cast<T*>(p.out) + row * D + 4 * d4, num, 0.f);
    return;
  }
  merge_rebase(den, num, mx, m);
#pragma unroll
  for (int q = 1; q < kMergeParts; ++q) {
    float dq = sm_den[q];
    float4 nq = sm_num[q][d4];
    merge_rebase(dq, nq, sm_max[q], m);
    den += dq;
    merge_acc4(num, 1.f, nq);
  }
  merge_store4(static_cast<T*>(p.out) + row * D + 4 * d4, num, den > 0.f ? 1.f / den : 0.f);
}

// The group's query heads of one (sequence, kv-head) row merged from the S partial results
// the row's CTAs wrote in this launch, by one CTA of kDecodeWarps warps, a thread a vector of
// 4 outputs folding every split (merge_fold_splits, through L2). The result does not depend on
// which CTA merges.
template <typename T, int D>
__device__ __forceinline__ void decode_merge_group(const DecodeParams& p, int b, int hq0) {
  const int S = p.num_splits;
  for (int idx = threadIdx.x; idx < p.group * (D / 4); idx += kDecodeWarps * 32) {
    const int h = idx / (D / 4), d4 = idx - h * (D / 4);
    const int64_t rq = (int64_t)b * p.num_q_heads + hq0 + h;
    float mx = -INFINITY, den = 0.f;
    float4 num = make_float4(0.f, 0.f, 0.f, 0.f);
    merge_fold_splits<D, true>(p.part_lse + rq * S, reinterpret_cast<const float4*>(p.part_o + rq * S * D) + d4, S, 0,
                               1, mx, den, num);
    merge_store4(static_cast<T*>(p.out) + rq * D + 4 * d4, num, den > 0.f ? 1.f / den : 0.f);
  }
}

// After decode_finish has written this CTA's split partial: a fenced increment of the
// row's `counter` (split-K's serial reduction), and the row's last CTA merges the group's
// splits. Returns true in that CTA, whose caller resets the counter. No CTA waits for
// another, so any grid size works. Saves the separate merge launch and its kernel boundary.
// `flag`: one int of shared memory the CTA no longer reads (the stage buffers after
// decode_finish), not a static __shared__ variable, which would move the dynamic stage
// buffers off their 256-byte alignment.
template <typename T, int D>
__device__ __forceinline__ bool decode_merge_if_last(const DecodeParams& p, int* counter, int b, int hq0,
                                                     volatile int* flag) {
  __syncthreads();  // every thread's partial stores (and shared reads) come before thread 0's release
  if (threadIdx.x == 0) {
    __threadfence();
    *flag = atomicAdd(counter, 1) == p.num_splits - 1;
  }
  __syncthreads();
  if (!*flag) return false;
  __threadfence();
  decode_merge_group<T, D>(p, b, hq0);
  return true;
}

// The per-warp tile pipeline of the decode kernels: STAGES shared-memory stages of
// `stage_bytes` each at `wbuf`, all but one in flight while one is computed. A warp only ever
// touches its own stages, so __syncwarp orders the loop. issue(stage, t) starts the
// asynchronous copies of the tile at virtual token t and returns its two validity bits;
// compute(stage, ok) folds a landed tile into the warp's state.
template <int STAGES, typename Issue, typename Compute>
__device__ __forceinline__ void decode_stream_tiles(uint32_t wbuf, uint32_t stage_bytes, int t0, int v_end,
                                                    Issue&& issue, Compute&& compute) {
  constexpr int kStride = kDecodeWarps * kDecodeTile;
  uint32_t okm = 0;  // bits 2*stage + h: validity of the tile copied into each stage
  int t_issue = t0;
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st, t_issue += kStride) {
    if (t_issue < v_end) okm |= issue(wbuf + st * stage_bytes, t_issue) << (2 * st);
    cp_async_commit();
  }
  int stage = 0;
  for (; t0 < v_end; t0 += kStride, t_issue += kStride) {
    const int ist = stage == 0 ? STAGES - 1 : stage - 1;  // the stage computed last
    __syncwarp();  // every lane is done reading stage `ist` (computed last iteration)
    okm &= ~(3u << (2 * ist));
    if (t_issue < v_end) okm |= issue(wbuf + ist * stage_bytes, t_issue) << (2 * ist);
    cp_async_commit();
    cp_async_wait<STAGES - 1>();  // this lane's copies into `stage` have landed ...
    __syncwarp();                 // ... and so have every other lane's
    compute(wbuf + stage * stage_bytes, (okm >> (2 * stage)) & 3u);
    stage = stage == STAGES - 1 ? 0 : stage + 1;
  }
  cp_async_wait<0>();
}

// After the tile loop: the warps' softmax states merged through shared memory (`smem`, the
// stage buffers, reused) and the CTA's output written (or its split's partial result).
// store_acc(o) writes this lane's accumulators into the warp's o[head][d].
template <typename T, int D, typename StoreAcc>
__device__ __forceinline__ void decode_finish(const DecodeParams& p, DecodeState<D>& st, void* smem, int b, int kvh,
                                              int split, StoreAcc&& store_acc) {
  float(&m)[2] = st.m;
  float(&l)[2] = st.l;
  __shared__ float sm_m[kDecodeWarps][kMaxGroup];
  __shared__ float sm_l[kDecodeWarps][kMaxGroup];
  float(*sm_o)[kMaxGroup][D] = reinterpret_cast<float(*)[kMaxGroup][D]>(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, q4 = lane & 3;
  const int hq0 = kvh * p.group;
  __syncthreads();  // sm_o below reuses every warp's stage buffers
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
  store_acc(sm_o[warp]);
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

// Q as the B operand of QK (column n = head g): k-step ks holds d = 16 ks + 2 q4 (+1) and
// 16 ks + 8 + 2 q4 (+1); padding heads (g >= group) are zero.
template <typename T, int D>
__device__ __forceinline__ void decode_load_q(const DecodeParams& p, int b, int hq0, int lane,
                                              uint32_t (&qf)[D / 16][2]) {
  const int g = lane >> 2, q4 = lane & 3;
  const T* qrow = static_cast<const T*>(p.q) + ((int64_t)b * p.num_q_heads + hq0 + g) * D;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    qf[ks][0] = g < p.group ? *reinterpret_cast<const uint32_t*>(qrow + 16 * ks + 2 * q4) : 0u;
    qf[ks][1] = g < p.group ? *reinterpret_cast<const uint32_t*>(qrow + 16 * ks + 8 + 2 * q4) : 0u;
  }
}

// A warp's accumulators into its o[head][d] (decode_finish's store_acc): acc[mt][c] holds
// head 2q4 + (c&1), d = 16mt + g + 8(c>>1).
template <int D>
__device__ __forceinline__ void decode_store_acc(const DecodeState<D>& st, float (*o)[D], int lane) {
  const int g = lane >> 2, q4 = lane & 3;
#pragma unroll
  for (int mt = 0; mt < D / 16; ++mt)
#pragma unroll
    for (int c = 0; c < 4; ++c) o[2 * q4 + (c & 1)][16 * mt + g + 8 * (c >> 1)] = st.acc[mt][c];
}

// A decode CTA's attention over virtual tokens [v_begin, v_end): every warp streams its
// tiles through the cp.async ring and the CTA's result or split partial is written
// (decode_finish). tile_row(t), called by the whole warp for each of its tiles in order,
// gives lane i < 16 the K/V element offset of token t + i (-1 when masked, also past v_end).
template <typename T, int D, typename TileRow>
__device__ __forceinline__ void decode_attend_tiles(const DecodeParams& p, void* smem, int b, int kvh, int split,
                                                    int v_begin, int v_end, TileRow&& tile_row) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  uint32_t qf[D / 16][2];
  decode_load_q<T, D>(p, b, kvh * p.group, lane, qf);
  DecodeState<D> st;
  constexpr uint32_t SB = decode_stage_bytes<D>();
  const uint32_t wbuf = static_cast<uint32_t>(__cvta_generic_to_shared(smem)) + warp * kDecodeStages * SB;
  decode_stream_tiles<kDecodeStages>(
      wbuf, SB, v_begin + warp * kDecodeTile, v_end,
      [&](uint32_t stage, int t) {
        return decode_copy_rows<2 * D>(stage, static_cast<const T*>(p.k_cache), static_cast<const T*>(p.v_cache),
                                       tile_row(t), lane, p.l2_prefetch != 0);
      },
      [&](uint32_t stage, uint32_t ok) { decode_tile_compute<T, D>(stage, ok, qf, st, p.scale_log2, lane); });
  decode_finish<T, D>(p, st, smem, b, kvh, split, [&](float(*o)[D]) { decode_store_acc<D>(st, o, lane); });
}

// decode_attend_tiles with a lookup per token: row(vt) is token vt's K/V element offset.
template <typename T, int D, typename Row>
__device__ __forceinline__ void decode_attend(const DecodeParams& p, void* smem, int b, int kvh, int split,
                                              int v_begin, int v_end, Row&& row) {
  const int lane = threadIdx.x & 31;
  decode_attend_tiles<T, D>(p, smem, b, kvh, split, v_begin, v_end,
                            [&](int t) -> int64_t { return lane < kDecodeTile ? row(t + lane) : -1; });
}

// A warp's K/V rows by tile from a window of page lookups, for block sizes that are a power
// of 2 >= 16 (a tile lies in one page). Lane l holds the logical page and the cache block of
// the warp's tile k0 + l for the 32 tiles from k0; the next window's pages are requested when
// a window starts and their blocks half-way through it, so they have landed when it ends.
// The per-token lookup made every tile's copies wait on its block-table load (and, with
// selected pages, on the page-list load before it); the window took 0.9-1.9% off the dense
// stream at 8 x 16K-32K and 64 x 32K and 5% at 8 x 1K (H200, csrc/NOTES.md).
template <int D>
struct DecodeWindow {
  const DecodeParams& p;
  const int* pages;   // the row's selected pages, or nullptr (dense)
  const int* blocks;  // the sequence's block table
  int kvh, t0, v_end, seq_len, n_pages, lane;
  int cur_lp, cur_blk, nxt_lp, nxt_blk;
  static constexpr int kStride = kDecodeWarps * kDecodeTile;  // a warp's tiles lie kStride tokens apart

  // this lane's tile of the window from k0: its logical page (-1: none)
  __device__ __forceinline__ int page_at(int k0) const {
    const int vt = t0 + (k0 + lane) * kStride;
    if (vt >= v_end) return -1;
    const int vp = vt >> p.block_shift;
    return pages != nullptr ? __ldg(pages + vp) : vp;
  }
  __device__ __forceinline__ int block_of(int lp) const { return lp >= 0 && lp < n_pages ? __ldg(blocks + lp) : -1; }

  __device__ DecodeWindow(const DecodeParams& p_, const DecodeCta& cta)
      : p(p_), kvh(cta.kvh), v_end(cta.v_end), seq_len(cta.seq_len), n_pages(cta.n_pages), lane(threadIdx.x & 31) {
    pages = p.page_indices != nullptr ? p.page_indices + ((int64_t)cta.b * p.num_kv_heads + kvh) * p.max_sel : nullptr;
    blocks = p.block_tables + (int64_t)cta.b * p.bt_stride;
    t0 = cta.v_begin + (threadIdx.x >> 5) * kDecodeTile;
    cur_lp = page_at(0);
    cur_blk = block_of(cur_lp);
    nxt_lp = page_at(32);
    nxt_blk = -1;
  }

  // lane i < 16: token t + i's K/V element offset (-1: masked)
  __device__ __forceinline__ int64_t operator()(int t) {
    int blk;
    return row(t, blk);
  }
  // the same, and the tile's cache block in blk_out (a tile lies in one page)
  __device__ __forceinline__ int64_t row(int t, int& blk_out) {
    const int k = (t - t0) / kStride, j = k & 31;
    if (j == 0 && k > 0) {
      cur_lp = nxt_lp;
      cur_blk = nxt_blk;
      nxt_lp = page_at(k + 32);
    }
    if (j == 16) nxt_blk = block_of(nxt_lp);
    const int blk = __shfl_sync(0xffffffffu, cur_blk, j), lp = __shfl_sync(0xffffffffu, cur_lp, j);
    blk_out = blk;
    const int vt = t + lane, off = vt & (p.block_size - 1);
    if (lane >= kDecodeTile || vt >= v_end || blk < 0 || lp * p.block_size + off >= seq_len) return -1;
    return (((int64_t)blk * p.block_size + off) * p.num_kv_heads + kvh) * (int64_t)D;
  }
};

// The in-launch merge of paged_decode_kernel<T, D, true>, kept out of line: inlined (behind a
// runtime branch or this template flag), it changed how ptxas compiled the tile loop before
// it (132 registers instead of 138) and the kernel streamed 13% slower even where no merge
// runs (64 x 32K: 2,241-2,247 us against FlashInfer's 1,952 in the same run, H200; the
// loop alone has run at 1,940-1,958).
template <typename T, int D>
__device__ __noinline__ void decode_merge_tail(DecodeParams p, int b, int kvh, int* flag) {
  int* counter = p.split_counters + b * p.num_kv_heads + kvh;
  if (decode_merge_if_last<T, D>(p, counter, b, kvh * p.group, flag) && threadIdx.x == 0) *counter = 0;
}

// MERGE: the split partials are merged in this launch (p.split_counters, p.num_splits > 1);
// without it a split grid is followed by decode_merge_kernel. WINDOW: the K/V rows come from
// DecodeWindow (block sizes a power of 2 >= 16), else from a lookup per token.
template <typename T, int D, bool MERGE, bool WINDOW>
__global__ void __launch_bounds__(kDecodeWarps * 32, 2)
paged_decode_kernel(const __grid_constant__ DecodeParams p) {
  extern __shared__ uint4 sm_dyn[];
  const DecodeCta cta(p);
  if constexpr (WINDOW) {
    decode_attend_tiles<T, D>(p, sm_dyn, cta.b, cta.kvh, cta.split, cta.v_begin, cta.v_end, DecodeWindow<D>(p, cta));
  } else {
    decode_attend<T, D>(p, sm_dyn, cta.b, cta.kvh, cta.split, cta.v_begin, cta.v_end, [&](int vt) {
      return decode_token_row(p, cta.b, cta.kvh, vt, cta.v_end, cta.seq_len, cta.n_pages, D);
    });
  }
  if constexpr (MERGE) decode_merge_tail<T, D>(p, cta.b, cta.kvh, reinterpret_cast<int*>(sm_dyn));
}

// out[b, h, :] = sum_s 2^(lse_s - lse_max) o_s / sum_s 2^(lse_s - lse_max). One CTA per
// (head, sequence), one thread per 4 output elements.
template <typename T, int D>
__global__ void __launch_bounds__(D / 4 * kMergeParts) decode_merge_kernel(const __grid_constant__ DecodeParams p) {
  pdl_entry();
  decode_merge_row<T, D>(p, (int64_t)blockIdx.y * p.num_q_heads + blockIdx.x);
}

// Every (dtype, head_dim) the extension builds; CI instantiates the same list.
#define TINYSERVE_DECODE_INSTANCES(X) \
  X(__half, 64)                       \
  X(__half, 128)                      \
  X(__nv_bfloat16, 64)                \
  X(__nv_bfloat16, 128)

}  // namespace tinyserve
