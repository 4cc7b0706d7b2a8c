// sparse_decode: query-aware sparse decode (Quest's page bound, top-k pages, attention over
// them) in one launch, for small batches.
//
// The three-launch chain (page_scores, select_pages, paged decode over the selected pages,
// then the split merge) costs ~22 us at batch 1 on an H200 against ~4 us of bytes: each
// stage is one short wave, and every boundary drains the GPU. Here one grid of
// B x Hkv x S CTAs (S splits per (sequence, kv-head) row), no larger than the CTAs the GPU
// holds at once (host check), does all of it:
//   1. score: the grid shares out the rows' pages in chunks, page_scores' tensor-core code
//      (score_tiles_mma) on each; a CTA's last barrier after a chunk is followed by an
//      increment of the row's counter;
//   2. select: every CTA waits (acquire) until its row's chunks are all scored, reads the
//      row's scores from L2, forces the pages every policy keeps to +inf, and runs
//      select_pages' search (select_kth, select_take): every CTA of the row finds the same
//      pages in the same order, writes its share of the page list and keeps that share;
//   3. attend: the decode kernel's tile pipeline over the CTA's pages;
//   4. merge: the row's last CTA to finish (a second counter) merges the S partial results
//      of its query heads and resets both counters to 0, ready for the next call.
// Waiting cannot deadlock: a CTA only waits in step 2, for chunks owned by CTAs that
// score before they wait, and every CTA of the grid fits on the GPU at once.
#pragma once

#include "page_scores_mma.cuh"
#include "paged_attention.cuh"

namespace tinyserve {

struct SparseDecodeParams {
  DecodeParams dec;        // num_splits = S; page_indices unused (the CTA keeps its pages)
  PageScoreParams score;   // out = the scores [B, Hkv, M]; pages_per_cta = pages per chunk
  int* page_indices;       // out: [B, Hkv, k] selected logical pages ascending, -1 padding
  int* counters;           // [2, B * Hkv]: chunks scored, splits done; 0 between calls
  int k;                   // pages kept per row
  int sink_pages;          // pages [0, sink_pages) are always kept ...
  int force_last;          // ... and so is the last page of the context when 1
  int chunks;              // score chunks per row
  int pages_per_split;     // ceil(k / S): list positions [split * pps, split * pps + pps)
};

constexpr int kSparseThreads = kDecodeWarps * 32;
constexpr int kSparseMaxItems = 32;        // keys per thread: rows up to 4,096 pages
constexpr int kSparseMaxSplitPages = 256;  // pages attended by one CTA

__device__ __forceinline__ int ld_acquire_gpu(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

template <typename T, int D>
__global__ void __launch_bounds__(kSparseThreads, 2)
sparse_decode_kernel(const __grid_constant__ SparseDecodeParams sp) {
  static_assert(kScoreWarps == kDecodeWarps, "one CTA shape serves every stage");
  // the stage buffers 256-byte aligned after the static arrays (3,424 bytes), as in the decode kernel
  extern __shared__ __align__(256) uint4 sm_dyn[];
  __shared__ int sel[kSparseMaxSplitPages];
  const DecodeParams& p = sp.dec;
  const int rows = gridDim.x / p.num_splits;  // B * Hkv
  const int Hkv = p.num_kv_heads;
  pdl_entry();

  // 1. score: chunk c of row (b, kvh) is item (b * chunks + c) * Hkv + kvh (kv-heads of
  // one page range side by side, as in page_scores' grid).
  for (int it = blockIdx.x; it < rows * sp.chunks; it += gridDim.x) {
    const int kvh = it % Hkv, rest = it / Hkv;
    const int chunk = rest % sp.chunks, b = rest / sp.chunks;
    const int p_begin = chunk * sp.score.pages_per_cta;
    // each warp stages its tiles in its slice of the stage buffers, which the attention fills later
    const int warp = threadIdx.x >> 5;
    score_tiles_mma<MmaScoreTile<T, D>>(
        sp.score, b, kvh, p_begin, min(sp.score.max_blocks, p_begin + sp.score.pages_per_cta), warp,
        kSparseThreads / 32, static_cast<uint32_t>(__cvta_generic_to_shared(sm_dyn)) + warp * MmaScoreTile<T, D>::kBytes);
    __syncthreads();  // the CTA's scores are written; one fence by the thread that signals
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(sp.counters + b * Hkv + kvh, 1);
    }
  }

  // 2. select
  const int row = blockIdx.x / p.num_splits, split = blockIdx.x % p.num_splits;
  const int b = row / Hkv, kvh = row % Hkv;
  const int M = sp.score.max_blocks;
  const int seq_len = p.seq_lens[b];
  const int n_pages = (seq_len + p.block_size - 1) / p.block_size;
  const int pps = sp.pages_per_split, lo = split * pps, hi = min(sp.k, lo + pps);
  for (int i = threadIdx.x; i < pps; i += kSparseThreads) sel[i] = -1;
  if (threadIdx.x == 0)
    while (ld_acquire_gpu(sp.counters + row) < sp.chunks) __nanosleep(32);
  __syncthreads();

  const int nitems = (ceil_div(M, kSparseThreads) + 3) & ~3;  // <= kSparseMaxItems (host check)
  const int base = threadIdx.x * nitems;
  const float* srow = sp.score.out + (int64_t)row * M;
  // All loads issued before any key is formed: a load and its use in one guarded block
  // waited out one L2 round trip per key (4.4 us for 16 keys a thread, H200 timeline).
  float score[kSparseMaxItems];
#pragma unroll
  for (int j = 0; j < kSparseMaxItems; ++j) score[j] = j < nitems && base + j < M ? __ldcg(srow + base + j) : 0.f;
  uint32_t key[kSparseMaxItems];
#pragma unroll
  for (int j = 0; j < kSparseMaxItems; ++j) {
    const int pg = base + j;
    const bool forced = pg < n_pages && (pg < sp.sink_pages || (sp.force_last && pg == n_pages - 1));
    key[j] = j < nitems && pg < M ? order_key(forced ? INFINITY : score[j]) : 0u;
  }
  const uint32_t kth = select_kth<kSparseThreads, kSparseMaxItems>(key, nitems, sp.k);
  int pos, written;
  const uint32_t take = select_take<kSparseThreads, kSparseMaxItems>(key, nitems, base, M, sp.k, kth, pos, written);
  const uint32_t neg_inf = order_key(-INFINITY);
  int* list = sp.page_indices + (int64_t)row * sp.k;
#pragma unroll
  for (int j = 0; j < kSparseMaxItems; ++j) {
    if ((take >> j) & 1u) {
      if (pos >= lo && pos < hi) {
        const int page = key[j] == neg_inf ? -1 : base + j;
        sel[pos - lo] = page;
        list[pos] = page;
      }
      ++pos;
    }
  }
  for (int q = max(written, lo) + threadIdx.x; q < hi; q += kSparseThreads) list[q] = -1;
  __syncthreads();

  // 3. attend: virtual tokens [0, pps * block_size) over the CTA's pages.
  const int hq0 = kvh * p.group;
  const int v_end = pps * p.block_size;
  decode_attend<T, D>(p, sm_dyn, b, kvh, split, 0, v_end, [&](int vt) -> int64_t {
    if (vt >= v_end) return -1;
    const int vp = p.block_shift >= 0 ? (vt >> p.block_shift) : vt / p.block_size;
    return decode_page_row(p, b, kvh, sel[vp], vt - vp * p.block_size, seq_len, n_pages, D);
  });

  // 4. merge (one split: decode_finish wrote the output)
  if (p.num_splits == 1) {
    if (threadIdx.x == 0) sp.counters[row] = 0;
    return;
  }
  if (decode_merge_if_last<T, D>(p, sp.counters + rows + row, b, hq0, reinterpret_cast<int*>(sm_dyn)) &&
      threadIdx.x == 0) {
    sp.counters[row] = 0;
    sp.counters[rows + row] = 0;
  }
}

#define TINYSERVE_SPARSE_INSTANCES(X) \
  X(__half, 64)                       \
  X(__half, 128)                      \
  X(__nv_bfloat16, 64)                \
  X(__nv_bfloat16, 128)

}  // namespace tinyserve
