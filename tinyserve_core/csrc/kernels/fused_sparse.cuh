// Fused query-aware sparse decode (sm_90): page scoring, top-k selection and attention
// over the selected pages in ONE launch, for small batches where the three-kernel path
// (page_scores -> select_pages -> paged_decode_kernel + merge) is latency bound.
//
// One thread-block cluster of C CTAs per (sequence, kv-head) row; grid (C, Hkv, B).
//  1. Score: CTA r scores pages [r * per, (r + 1) * per) of the row. Its metadata slice is
//     fetched into shared memory with cp.async in chunks (one round trip per chunk, all of
//     a chunk in flight) and scored with page_scores' rounding-up math (group_bound4), so
//     the scores are bit-identical to page_scores'. They land in the CTA's score slice.
//  2. Cluster barrier; every CTA gathers the whole row's scores from the C slices through
//     distributed shared memory (ld.shared::cluster) into its own shared memory.
//  3. Select, redundantly in each CTA (no further communication): the exact k-th largest
//     score by a 4-pass radix select (8 bits per pass, shared-memory histogram) over
//     select_pages' order-preserving keys, ties by lowest page, as select_pages does.
//     Selected pages are ranked in page order; CTA r takes ranks [r * sper, (r + 1) * sper)
//     and writes them to the page_indices output.
//  4. Attend: the CTA streams its selected pages' K/V through the decode kernel's ring
//     (decode_stream_tiles over a shared-memory page list) and merges its warps
//     (decode_merge_warps).
//  5. Cluster barrier; CTA r merges its share of the row's (head, element) outputs from the
//     C partial results by log-sum-exp (DSMEM reads) and writes them; a last barrier keeps
//     every CTA's shared memory alive until the others have read it.
// No global scratch, no counters, no second launch.
#pragma once

#include "page_scores.cuh"
#include "paged_attention.cuh"

namespace tinyserve {

constexpr int kFusedMaxPages = 4096;  // pages per row the gathered scores may hold
constexpr int kFusedMaxCluster = 16;

struct FusedSparseParams {
  DecodeParams d;      // q, caches, block_tables, seq_lens, out, heads, block size, scale_log2
  PageScoreParams s;   // q, meta, block_tables, seq_lens, heads, head_dim, block size, scales
  int* sel_out;        // [B, Hkv, k] logical pages in page order, -1 pad
  int k;               // pages to select per row
  int slice_cap;       // floats of each CTA's score slice: ceil(max_blocks / C)
  int sel_cap;         // selected pages per CTA: ceil(min(k, max_blocks) / C)
};

// Bytes of the dynamic shared memory: the decode stages (also the metadata chunks while
// scoring, the gathered row while selecting, the warp merge and the partial result at the
// end), then the CTA's score slice, then its selected pages {block id, tokens}.
template <int D>
__host__ __device__ constexpr int fused_region_bytes() { return decode_smem_bytes<D>(); }
__host__ __device__ constexpr int fused_align16(int x) { return (x + 15) / 16 * 16; }
template <int D>
__host__ __device__ constexpr int fused_smem_bytes(int slice_cap, int sel_cap) {
  return fused_region_bytes<D>() + fused_align16(slice_cap * 4) + fused_align16(sel_cap * 8);
}
// Offsets inside the stage region: q+/q- (room for kMaxGroup heads), then metadata chunks.
template <int D>
__host__ __device__ constexpr int fused_meta_offset() { return 2 * kMaxGroup * D * 4; }
template <typename T, int D>
__host__ __device__ constexpr int fused_chunk_pages() {
  return (fused_region_bytes<D>() - fused_meta_offset<D>()) / (2 * D * (int)sizeof(T));
}
// The partial result {o[kMaxGroup][D], lse[kMaxGroup]} sits after the warp-merge buffer.
template <int D>
__host__ __device__ constexpr int fused_partial_offset() { return kDecodeWarps * kMaxGroup * D * 4; }
static_assert(fused_partial_offset<128>() + (kMaxGroup * 128 + kMaxGroup) * 4 <= fused_region_bytes<128>(), "");
static_assert(fused_partial_offset<64>() + (kMaxGroup * 64 + kMaxGroup) * 4 <= fused_region_bytes<64>(), "");
static_assert(kFusedMaxPages * 4 <= fused_region_bytes<64>(), "the gathered row must fit the stage region");

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
// The address of shared-memory address `smem` of this CTA in the CTA of cluster rank `rank`.
__device__ __forceinline__ uint32_t cluster_map(uint32_t smem, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem), "r"(rank));
  return r;
}
__device__ __forceinline__ float ld_cluster(uint32_t addr) {
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
  return v;
}
#endif

// The selected-page lookup of the attention phase: virtual token vt of the CTA's share is
// token vt % bs of its (vt / bs)-th selected page.
template <int D>
struct FusedRows {
  const int2* sel;  // {physical block, tokens in the page}
  int n_tokens, block_size, block_shift, num_kv_heads, kvh;
  __device__ __forceinline__ int64_t operator()(int vt) const {
    if (vt >= n_tokens) return -1;
    const int i = block_shift >= 0 ? vt >> block_shift : vt / block_size;
    const int off = vt - i * block_size;
    const int2 e = sel[i];
    if (off >= e.y) return -1;
    return (((int64_t)e.x * block_size + off) * num_kv_heads + kvh) * (int64_t)D;
  }
};

// Phase 1: scores of pages [p_begin, p_end) of row (b, kvh) into slice[0 ..).
template <typename T, int D>
__device__ __forceinline__ void fused_score_slice(const FusedSparseParams& f, float* region, float* slice, int b,
                                                  int kvh, int p_begin, int p_end) {
  constexpr int VEC = 16 / sizeof(T), LPP = D / VEC, GPW = 32 / LPP, NV = D / VEC;
  constexpr int CH = fused_chunk_pages<T, D>();
  const PageScoreParams& p = f.s;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, sub = lane / LPP, li = lane % LPP;
  float* sq = region;
  const uint32_t mbuf = static_cast<uint32_t>(__cvta_generic_to_shared(region)) + fused_meta_offset<D>();
  const T* mrow = reinterpret_cast<const T*>(reinterpret_cast<const char*>(region) + fused_meta_offset<D>());
  const T* meta = static_cast<const T*>(p.meta);
  const int* bt = p.block_tables + (int64_t)b * p.bt_stride;
  load_q_signs<T, D>(sq, p, b, kvh);
  for (int c0 = p_begin; c0 < p_end; c0 += CH) {
    const int npg = min(CH, p_end - c0);
    // Every 16-byte vector of the chunk's min and max rows: [page][min|max][D] in shared memory.
    for (int i = threadIdx.x; i < npg * 2 * NV; i += blockDim.x) {
      const int pg = i / (2 * NV), r = i - pg * 2 * NV, which = r / NV, v = r - which * NV;
      const int64_t blk = __ldg(bt + c0 + pg);
      cp_async16_s(mbuf + i * 16, meta + ((blk * 2 + which) * p.num_kv_heads + kvh) * D + v * VEC, 16);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();  // the chunk (and, the first time, q+/q-) is in shared memory
    constexpr int kStride = kDecodeWarps * GPW * 4;
    for (int wb = warp * GPW * 4; wb < npg; wb += kStride) {  // warp-uniform: every lane shuffles
      const int base = wb + sub * 4;
      uint4 lo[4], hi[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const bool in = base + u < npg;
        const T* row = mrow + (int64_t)(base + u) * 2 * D + li * VEC;
        lo[u] = in ? *reinterpret_cast<const uint4*>(row) : make_uint4(0, 0, 0, 0);
        hi[u] = in ? *reinterpret_cast<const uint4*>(row + D) : make_uint4(0, 0, 0, 0);
      }
      float fl[4][VEC], fh[4][VEC];
      unpack_bounds<T, 4>(lo, hi, fl, fh);
      const float best = group_bound4<D, VEC>(fl, fh, sq, p.group, li);
      const int pg = base + li / (LPP / 4);
      if (li % (LPP / 4) == 0 && pg < npg) slice[c0 - p_begin + pg] = scale_bound(best, p);
    }
    __syncthreads();  // the next chunk overwrites the buffer
  }
}

// Phase 3: the k-th largest key of row[0 .. n) (kth) and how many pages scoring exactly
// kth are taken (need_eq), by a radix select over 8-bit digits, most significant first.
__device__ __forceinline__ void fused_radix_select(const float* row, int n, int k, uint32_t& kth, int& need_eq) {
  __shared__ int hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_rem;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t prefix = 0, mask = 0;
  int rem = k;  // pages still to take at or below the digits decided so far
#pragma unroll 1
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const uint32_t key = order_key(row[i]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
    }
    __syncthreads();
    if (warp == 0) {
      // lane L holds digits 255 - 8L down to 248 - 8L: cumulative counts from the top
      int c[8], sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) sum += c[j] = hist[255 - 8 * lane - j];
      const int incl = warp_inclusive_scan(sum);
      const uint32_t hit = __ballot_sync(0xffffffffu, incl >= rem);
      const int src = hit ? __ffs(hit) - 1 : 31;  // rem <= candidates, so some lane reaches it
      if (lane == src) {
        int above = incl - sum, d = 255 - 8 * lane;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (above + c[j] >= rem) {
            d = 255 - 8 * lane - j;
            break;
          }
          above += c[j];
        }
        s_prefix = prefix | (uint32_t(d) << shift);
        s_rem = rem - above;
      }
    }
    __syncthreads();
    prefix = s_prefix;
    rem = s_rem;
    mask |= 255u << shift;
    __syncthreads();  // s_prefix / hist are rewritten by the next pass
  }
  kth = prefix;
  need_eq = rem;
}

template <typename T, int D>
__global__ void __launch_bounds__(kDecodeWarps * 32, 2)
fused_sparse_decode_kernel(const __grid_constant__ FusedSparseParams f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ uint4 sm_dyn[];
  float* region = reinterpret_cast<float*>(sm_dyn);
  float* slice = reinterpret_cast<float*>(reinterpret_cast<char*>(sm_dyn) + fused_region_bytes<D>());
  int2* sel = reinterpret_cast<int2*>(reinterpret_cast<char*>(slice) + fused_align16(f.slice_cap * 4));
  const DecodeParams& p = f.d;
  const uint32_t C = gridDim.x, r = cluster_rank();
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  wait_prior_grid();
  const int seq_len = p.seq_lens[b];
  const int bs = p.block_size;
  const int n_pages = (seq_len + bs - 1) / bs;
  const int per = (n_pages + C - 1) / C;

  // 1. score this CTA's slice of the row
  const int p_begin = min(n_pages, (int)r * per), p_end = min(n_pages, p_begin + per);
  fused_score_slice<T, D>(f, region, slice, b, kvh, p_begin, p_end);
  cluster_sync_all();  // every slice is written

  // 2. gather the row's scores (slice of rank j holds pages j * per ..)
  const uint32_t slice_addr = static_cast<uint32_t>(__cvta_generic_to_shared(slice));
  for (int i = threadIdx.x; i < n_pages; i += blockDim.x) {
    const int j = i / per;
    region[i] = ld_cluster(cluster_map(slice_addr, j) + (i - j * per) * 4);
  }
  __syncthreads();

  // 3. select: pages with key > kth, and the first need_eq pages with key == kth
  const int k_sel = min(f.k, n_pages);
  uint32_t kth = 0;  // k >= n_pages: every page (every key is above 0)
  int need_eq = 0;
  if (k_sel < n_pages && k_sel > 0) fused_radix_select(region, n_pages, k_sel, kth, need_eq);
  // Thread t ranks pages [t * items, ..): counts, two scans, then the CTA's share.
  constexpr int NT = kDecodeWarps * 32;
  const int items = (n_pages + NT - 1) / NT, i0 = threadIdx.x * items, i1 = min(n_pages, i0 + items);
  int n_eq = 0;
  for (int i = i0; i < i1; ++i) n_eq += order_key(region[i]) == kth;
  int total;
  int eq_rank = block_exclusive_scan<NT>(n_eq, &total);
  int n_take = 0;
  for (int i = i0; i < i1; ++i) {
    const uint32_t key = order_key(region[i]);
    n_take += k_sel > 0 && (key > kth || (key == kth && eq_rank++ < need_eq));
  }
  int pos = block_exclusive_scan<NT>(n_take, &total);
  const int sper = (k_sel + C - 1) / C, s_lo = min(k_sel, (int)r * sper), s_hi = min(k_sel, s_lo + sper);
  const int* bt = p.block_tables + (int64_t)b * p.bt_stride;
  int* sel_out = f.sel_out + ((int64_t)b * p.num_kv_heads + kvh) * f.k;
  eq_rank -= n_eq;  // back to this thread's first tie rank
  for (int i = i0; i < i1 && pos < s_hi; ++i) {
    const uint32_t key = order_key(region[i]);
    const bool take = k_sel > 0 && (key > kth || (key == kth && eq_rank++ < need_eq));
    if (!take) continue;
    if (pos >= s_lo) {
      sel[pos - s_lo] = make_int2(__ldg(bt + i), min(bs, seq_len - i * bs));
      sel_out[pos] = i;
    }
    ++pos;
  }
  if (r == 0)
    for (int q = k_sel + threadIdx.x; q < f.k; q += NT) sel_out[q] = -1;
  __syncthreads();  // sel is complete; region is free for the stages

  // 4. attend this CTA's selected pages
  const int hq0 = kvh * p.group;
  uint32_t qf[D / 16][2];
  decode_load_q<T, D>(qf, static_cast<const T*>(p.q), (int64_t)b * p.num_q_heads + hq0, p.group, lane);
  DecodeState<D> st;
  const FusedRows<D> rows{sel, (s_hi - s_lo) * bs, bs, p.block_shift, p.num_kv_heads, kvh};
  constexpr uint32_t SB = decode_stage_bytes<D>();
  const uint32_t wbuf = static_cast<uint32_t>(__cvta_generic_to_shared(sm_dyn)) + warp * kDecodeStages * SB;
  decode_stream_tiles<kDecodeStages>(
      wbuf, SB, warp * kDecodeTile, rows.n_tokens,
      [&](uint32_t stage, int t) {
        const int64_t mine = lane < kDecodeTile ? rows(t + lane) : -1;
        return decode_copy_rows<2 * D>(stage, static_cast<const T*>(p.k_cache), static_cast<const T*>(p.v_cache),
                                       mine, lane);
      },
      [&](uint32_t stage, uint32_t ok) { decode_tile_compute<T, D>(stage, ok, qf, st, p.scale_log2, lane); });
  float* part_o = reinterpret_cast<float*>(reinterpret_cast<char*>(sm_dyn) + fused_partial_offset<D>());
  float* part_lse = part_o + kMaxGroup * D;
  decode_merge_warps<D>(
      st, sm_dyn, p.group, [&](float(*o)[D]) { decode_store_acc<D>(o, st, lane); },
      [&](int h, int d, float o, float lse) {
        part_o[h * D + d] = o;
        if (d == 0) part_lse[h] = lse;
      });
  cluster_sync_all();  // every CTA's partial result is written

  // 5. merge the C partial results of this CTA's share of the row's outputs
  const int E = p.group * D, eper = (E + C - 1) / C;
  const uint32_t po_addr = static_cast<uint32_t>(__cvta_generic_to_shared(part_o));
  const uint32_t pl_addr = static_cast<uint32_t>(__cvta_generic_to_shared(part_lse));
  for (int e = (int)r * eper + threadIdx.x; e < min(E, (int)(r + 1) * eper); e += NT) {
    const int h = e / D;
    float mx = -INFINITY;
    for (uint32_t j = 0; j < C; ++j) mx = fmaxf(mx, ld_cluster(cluster_map(pl_addr, j) + h * 4));
    float den = 0.f, num = 0.f;
    if (mx != -INFINITY) {
      for (uint32_t j = 0; j < C; ++j) {
        const float ls = ld_cluster(cluster_map(pl_addr, j) + h * 4);
        const float wt = ls == -INFINITY ? 0.f : exp2f(ls - mx);
        den += wt;
        num += wt * ld_cluster(cluster_map(po_addr, j) + e * 4);
      }
    }
    static_cast<T*>(p.out)[((int64_t)b * p.num_q_heads + hq0) * D + e] = from_float<T>(den > 0.f ? num / den : 0.f);
  }
  cluster_sync_all();  // no CTA leaves while another still reads its shared memory
#else
  __trap();  // launched only on sm_90+ (sparse_ops.cu checks the device)
#endif
}

#define TINYSERVE_FUSED_INSTANCES(X) \
  X(__half, 64)                      \
  X(__half, 128)                     \
  X(__nv_bfloat16, 64)               \
  X(__nv_bfloat16, 128)

}  // namespace tinyserve
