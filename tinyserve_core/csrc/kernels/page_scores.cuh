// page_scores: the Quest bounding-box bound of each page's attention logit,
//   U[b, g, p] = scale * max_{h in group g} sum_i max(q_hi * min_pi, q_hi * max_pi).
// Every product, sum and the final scaling round toward +infinity, so the computed U is
// never below the exact real-number bound, hence never below any true scale * q.k of a key
// in the page: the bound stays exact in floating point. (Built without fast-math.)
#pragma once

#include "common.cuh"

namespace tinyserve {

struct PageScoreParams {
  const void* q;            // [B, Hq, D]
  const void* meta;         // [NB, 2, Hkv, D]
  const int* block_tables;  // [B, bt_stride]
  const int* seq_lens;      // [B]
  float* out;               // [B, Hkv, max_blocks]
  int num_q_heads, num_kv_heads, group, head_dim, block_size, bt_stride, max_blocks;
  int pages_per_cta;
  // The caller's (double) scale rounded down and up to float: a positive bound is scaled
  // by the upper one and a negative bound by the lower one, so the rounding of the scale
  // itself can never pull the result below the exact scale * bound.
  float scale_lo, scale_hi;
  const float* kv_scales;   // an FP8 cache's [NB, 2, Hkv] page scales (page_scores_fp8.cuh), else nullptr
};

constexpr int kScoreWarps = 4;

// Dynamic shared memory of a page_scores CTA: the query group's positive and negative
// parts (fp32) and the CTA's slice of the block table.
__host__ __device__ constexpr int page_scores_smem_bytes(int group, int head_dim, int pages_per_cta) {
  return (2 * group * head_dim + pages_per_cta) * 4;
}

// Sums, over the LPP lanes of a page group, four per-lane values (one per page u of the
// lane's 4-page batch), rounding up, with a transposing butterfly: 5 shuffles instead of
// 4 x log2(LPP). On return, lanes li with li / (LPP / 4) == u hold page u's total.
template <int LPP>
__device__ __forceinline__ float sum4_transposed(const float (&a)[4], int li) {
  static_assert(LPP >= 4, "needs at least 4 lanes per page");
  constexpr int H1 = LPP / 2, H2 = LPP / 4;
  const bool b1 = li & H1, b2 = li & H2;
  // keep pages {2 b1, 2 b1 + 1}, hand the other pair to the partner across H1
  const float k0 = __fadd_ru(b1 ? a[2] : a[0], __shfl_xor_sync(0xffffffffu, b1 ? a[0] : a[2], H1));
  const float k1 = __fadd_ru(b1 ? a[3] : a[1], __shfl_xor_sync(0xffffffffu, b1 ? a[1] : a[3], H1));
  // keep page 2 b1 + b2
  float v = __fadd_ru(b2 ? k1 : k0, __shfl_xor_sync(0xffffffffu, b2 ? k0 : k1, H2));
#pragma unroll
  for (int o = H2 / 2; o > 0; o >>= 1) v = __fadd_ru(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Lanes split into groups of LPP, each group scores 4 consecutive pages per step with one
// 16-byte vector of the min row and one of the max row per lane and page. For each query
// head, the lane's slice of q+ = max(q, 0) and q- = min(q, 0) is read from shared memory
// once for the 4 pages; max(q*lo, q*hi) = q+ * hi + q- * lo is two fused multiply-adds
// rounded up (one adds an exact zero). The CTA's block-table entries are fetched up front
// in one coalesced pass, so no metadata load waits on its own table load; each step's loads
// are issued one step ahead.
template <typename T, int D, int U>
__device__ __forceinline__ void score_load(uint4 (&lo)[U], uint4 (&hi)[U], const PageScoreParams& p, const T* meta,
                                           const int* sblk, int base, int p_begin, int p_end, int kvh, int li) {
  constexpr int VEC = 16 / sizeof(T);
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int pg = base + u;
    const int64_t blk = pg < p_end ? sblk[pg - p_begin] : -1;
    lo[u] = hi[u] = make_uint4(0, 0, 0, 0);
    if (blk >= 0) {
      const T* m0 = meta + (blk * 2 * p.num_kv_heads + kvh) * D + li * VEC;
      lo[u] = *reinterpret_cast<const uint4*>(m0);
      hi[u] = *reinterpret_cast<const uint4*>(m0 + (int64_t)p.num_kv_heads * D);
    }
  }
}

// The scores of pages [p_begin, p_begin + pages_per_cta) of row (b, kvh) by one
// kScoreWarps-warp CTA; `sq` is page_scores_smem_bytes of shared memory. Ends with the
// CTA's own writes issued (no barrier after them).
// G > 0: the group has exactly G query heads (p.group == G) and the head loop is unrolled,
// so each head's q+/q- loads from shared memory are issued ahead of the previous head's
// math (a third of the stalls waited on them, Nsight Compute); G = 0: any group.
template <typename T, int D, int G = 0>
__device__ __forceinline__ void score_page_range(const PageScoreParams& p, float* sq, int b, int kvh, int p_begin) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int LPP = D / VEC;           // lanes per page group
  constexpr int GPW = 32 / LPP;          // page groups per warp
  constexpr int U = 4;                   // pages per group per step
  static_assert(LPP <= 32 && 32 % LPP == 0, "head_dim must fill whole lanes");
  int* sblk = reinterpret_cast<int*>(sq + 2 * p.group * D);  // after [group][2][D] (q+, q-)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int sub = lane / LPP, li = lane % LPP;
  const int seq_len = p.seq_lens[b];
  const int n_pages = (seq_len + p.block_size - 1) / p.block_size;
  const int p_end = min(p.max_blocks, p_begin + p.pages_per_cta);

  const T* qg = static_cast<const T*>(p.q) + ((int64_t)b * p.num_q_heads + kvh * p.group) * D;
  for (int i = threadIdx.x; i < p.group * D; i += blockDim.x) {
    const float v = to_float(qg[i]);
    const int h = i / D, d = i - h * D;
    sq[(2 * h) * D + d] = fmaxf(v, 0.f);
    sq[(2 * h + 1) * D + d] = fminf(v, 0.f);
  }
  for (int i = threadIdx.x; i < p_end - p_begin; i += blockDim.x) {
    const int pg = p_begin + i;
    sblk[i] = pg < n_pages ? p.block_tables[(int64_t)b * p.bt_stride + pg] : -1;
  }
  __syncthreads();

  float* out = p.out + ((int64_t)b * p.num_kv_heads + kvh) * p.max_blocks;
  const T* meta = static_cast<const T*>(p.meta);
  const int my_u = li / (LPP / 4);  // the page of the batch whose total this lane ends with

  // The loop bound is warp-uniform so every lane reaches the shuffles. The next step's
  // metadata is requested as soon as this step's is converted, so it arrives during the math.
  constexpr int kStride = kScoreWarps * GPW * U;
  int wb = p_begin + warp * GPW * U;
  uint4 lo[U], hi[U];
  if (wb < p_end) score_load<T, D, U>(lo, hi, p, meta, sblk, wb + sub * U, p_begin, p_end, kvh, li);
  for (; wb < p_end; wb += kStride) {
    const int base = wb + sub * U;
    float fl[U][VEC], fh[U][VEC];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        fl[u][i] = to_float(reinterpret_cast<const T*>(&lo[u])[i]);
        fh[u][i] = to_float(reinterpret_cast<const T*>(&hi[u])[i]);
      }
    if (wb + kStride < p_end)
      score_load<T, D, U>(lo, hi, p, meta, sblk, base + kStride, p_begin, p_end, kvh, li);
    float best = -INFINITY;
    const int group = G > 0 ? G : p.group;
#pragma unroll(G > 0 ? G : 1)
    for (int h = 0; h < group; ++h) {
      float qp[VEC], qn[VEC];
#pragma unroll
      for (int i = 0; i < VEC; i += 4) {
        *reinterpret_cast<float4*>(qp + i) = *reinterpret_cast<const float4*>(sq + (2 * h) * D + li * VEC + i);
        *reinterpret_cast<float4*>(qn + i) = *reinterpret_cast<const float4*>(sq + (2 * h + 1) * D + li * VEC + i);
      }
      float acc[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        acc[u] = 0.f;
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          acc[u] = __fmaf_ru(qp[i], fh[u][i], acc[u]);
          acc[u] = __fmaf_ru(qn[i], fl[u][i], acc[u]);
        }
      }
      best = fmaxf(best, sum4_transposed<LPP>(acc, li));
    }
    const int pg = base + my_u;
    if (li % (LPP / 4) == 0 && pg < p_end)
      out[pg] = pg < n_pages ? __fmul_ru(best, best >= 0.f ? p.scale_hi : p.scale_lo) : -INFINITY;
  }
}

// The unrolled instances keep 4 CTAs an SM (128 registers): left alone they take ~143 and
// 3 CTAs, slower at every batch (H200: 158.5 against 145.2 us at 64 x 32K).
template <typename T, int D, int G>
__global__ void __launch_bounds__(kScoreWarps * 32, G > 0 ? 4 : 1)
page_scores_kernel(const __grid_constant__ PageScoreParams p) {
  extern __shared__ __align__(16) float sq[];
  pdl_entry();
  // kv-head is the fastest grid index: the CTAs of one page range run side by side and read
  // the same metadata blocks ([2, Hkv, D] each) together.
  score_page_range<T, D, G>(p, sq, blockIdx.z, blockIdx.x, blockIdx.y * p.pages_per_cta);
}

// select_pages: the k highest-scoring pages of each (sequence, kv-head) row, one 256-thread
// CTA per row, ITEMS consecutive pages per thread in registers. The k-th largest score is
// found exactly by a radix select over the order-preserving integer image of the floats
// (select_kth). (One warp per row and a 1024-thread CTA measured slower on an H100, see
// NOTES.md.) Pages above it are taken, ties at it by lowest page index, and a block-wide
// scan writes them in page order. Pages scoring -inf (past the context) come out as -1, as
// do slots past the row's length.
constexpr int kSelectThreads = 256;
constexpr int kSelectMaxItems = 16;  // rows up to 4096 pages in registers; longer rows: torch.topk

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f + 0.f);  // -0 + 0 = +0: the two zeros tie, as they compare
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The k-th largest key of the block (each thread's first `nitems` of `key`, a multiple of
// 4; padding keys are 0, below every real key), or a value v that exactly k keys reach
// (every v between the k-th and the (k+1)-th key selects the same pages, and select_take
// treats such a v alike), or 0 when the block has fewer than k keys: a radix select over
// digits of up to 8 bits. The block's largest and smallest real keys come first: the bits
// they share are the k-th key's too, so the passes start at their highest differing bit.
// Each pass counts the keys that match the prefix found so far into a shared histogram of
// the next digit (one shared-memory atomic a key), scans the bins from the top to the one
// that holds the k-th key and stops as soon as that bin holds exactly the keys still to be
// taken (two or three passes on a row of 2,048 bounds). Three barriers a pass; the two-bit
// search it replaced spent one barrier and four warp reductions on every two bits, 1.7x the
// cycles (H200, csrc/NOTES.md).
template <int THREADS, int ITEMS>
__device__ __forceinline__ uint32_t select_kth(const uint32_t (&key)[ITEMS], int nitems, int k) {
  static_assert(ITEMS % 4 == 0, "keys come in groups of 4");
  static_assert(THREADS == 128 || THREADS == 256, "a thread scans 256 / THREADS bins");
  constexpr int WARPS = THREADS / 32, BPT = 256 / THREADS;
  __shared__ int hist[2][256];
  __shared__ uint32_t red[3][WARPS];
  __shared__ int wsum[WARPS];
  __shared__ int state[3];  // digit, keys still to take after the bin's higher neighbours, keys in the bin
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // 1. the real (nonzero) keys' count, largest and smallest; both histograms zeroed
  uint32_t mx = 0, mn = 0xffffffffu;
  int n = 0;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j)
    if ((j & ~3) < nitems && key[j] != 0u) {
      mx = max(mx, key[j]);
      mn = min(mn, key[j]);
      ++n;
    }
#pragma unroll
  for (int i = 0; i < 2 * BPT; ++i) (&hist[0][0])[threadIdx.x + i * THREADS] = 0;
  mx = __reduce_max_sync(0xffffffffu, mx);
  mn = __reduce_min_sync(0xffffffffu, mn);
  n = __reduce_add_sync(0xffffffffu, n);
  if (lane == 0) {
    red[0][warp] = mx;
    red[1][warp] = mn;
    red[2][warp] = n;
  }
  __syncthreads();
  mx = 0, mn = 0xffffffffu, n = 0;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) {
    mx = max(mx, red[0][w]);
    mn = min(mn, red[1][w]);
    n += (int)red[2][w];
  }
  if (n < k) return 0u;
  if (mx == mn) return mx;  // one distinct value, held by >= k keys
  // 2. digits from the highest bit where the keys differ
  uint32_t prefix = mx & ~((2u << (31 - __clz(mx ^ mn))) - 1u);
  int hi = 31 - __clz(mx ^ mn), k_rem = k;
#pragma unroll 1
  for (int pass = 0;; ++pass) {
    const int sh = max(hi - 7, 0);
    const uint32_t above = ~((2u << hi) - 1u);  // bits already decided (0 for hi = 31)
    int* h = hist[pass & 1];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j)
      if ((j & ~3) < nitems && key[j] != 0u && ((key[j] ^ prefix) & above) == 0u)
        atomicAdd(h + ((key[j] >> sh) & 0xffu & ((2u << (hi - sh)) - 1u)), 1);
    __syncthreads();
    // this thread's bins, highest first: 255 - BPT * t - i; each zeroed for the pass after next
    int c[BPT], mine = 0;
#pragma unroll
    for (int i = 0; i < BPT; ++i) {
      const int bin = 255 - BPT * (int)threadIdx.x - i;
      c[i] = h[bin];
      h[bin] = 0;
      mine += c[i];
    }
    // block_exclusive_scan's three barriers are more than this needs: every thread adds the
    // earlier warps' totals itself after one barrier
    const int inc = warp_inclusive_scan(mine);
    if (lane == 31) wsum[warp] = inc;
    __syncthreads();
    int before = inc - mine;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) before += w < warp ? wsum[w] : 0;
#pragma unroll
    for (int i = 0; i < BPT; ++i) {
      if (before < k_rem && before + c[i] >= k_rem) {
        state[0] = 255 - BPT * (int)threadIdx.x - i;
        state[1] = k_rem - before;
        state[2] = c[i];
      }
      before += c[i];
    }
    __syncthreads();
    prefix |= (uint32_t)state[0] << sh;
    k_rem = state[1];
    if (state[2] == k_rem || sh == 0) return prefix;
    hi = sh - 1;
  }
}

// The selection at threshold `kth`: keys above it, and ties at it by lowest page index
// until k are taken. Returns this thread's taken keys as bits (bit j: key j, page
// base + j); `pos` gets the list position of its first taken page (pages in ascending
// order) and `written` the pages taken by the block (<= k; the list's tail is -1).
template <int THREADS, int ITEMS>
__device__ __forceinline__ uint32_t select_take(const uint32_t (&key)[ITEMS], int nitems, int base, int M, int k,
                                                uint32_t kth, int& pos, int& written) {
  static_assert(THREADS * ITEMS < 65536, "a count must fit 16 bits");
  // One scan of (pages above kth) << 16 | (real pages at kth): counts stay below 2^16. It
  // also gives the list positions: the pages taken before this thread's are all those above
  // kth plus the first need_eq of those at it, so no second scan is needed.
  int n_gt = 0, n_eq = 0;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j)
    if (j < nitems) {
      n_gt += key[j] > kth;
      n_eq += base + j < M && key[j] == kth;
    }
  int tot;
  const int pre = block_exclusive_scan<THREADS>((n_gt << 16) | n_eq, &tot);
  const int need_eq = max(k - (tot >> 16), 0);
  int eq_rank = pre & 0xffff;
  pos = (pre >> 16) + min(eq_rank, need_eq);
  written = (tot >> 16) + min(tot & 0xffff, need_eq);
  uint32_t take = 0;
#pragma unroll
  for (int j = 0; j < ITEMS; ++j)
    if (j < nitems) {
      const bool eq = base + j < M && key[j] == kth;
      const bool t = key[j] > kth || (eq && eq_rank < need_eq);
      eq_rank += eq;
      take |= uint32_t(t) << j;
    }
  return take;
}

template <int ITEMS>
__global__ void __launch_bounds__(kSelectThreads)
select_pages_kernel(const float* __restrict__ scores, int M, int k, int* __restrict__ out) {
  constexpr int NK = ITEMS < 4 ? 4 : ITEMS;  // key groups of 4 (the extra keys are padding)
  const int row = blockIdx.x;
  pdl_entry();
  const float* s = scores + (int64_t)row * M;
  int* o = out + (int64_t)row * k;
  const int base = threadIdx.x * ITEMS;
  uint32_t key[NK];
#pragma unroll
  for (int j = 0; j < NK; ++j) key[j] = j < ITEMS && base + j < M ? order_key(__ldg(s + base + j)) : 0u;

  const uint32_t kth = select_kth<kSelectThreads, NK>(key, NK, k);
  int pos, written;
  const uint32_t take = select_take<kSelectThreads, NK>(key, ITEMS, base, M, k, kth, pos, written);
  const uint32_t neg_inf = order_key(-INFINITY);
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    if ((take >> j) & 1u) {
      if (pos < k) o[pos] = key[j] == neg_inf ? -1 : base + j;
      ++pos;
    }
  }
  for (int q = written + threadIdx.x; q < k; q += kSelectThreads) o[q] = -1;
}

#define TINYSERVE_SELECT_INSTANCES(X) X(1) X(2) X(4) X(8) X(16)

// page_scores_kernel's head loops: any group, and unrolled for groups of 4 query heads (8
// spills a few registers under the cap and was not measured).
#define TINYSERVE_SCORE_GROUPS(X, T, D) X(T, D, 0) X(T, D, 4)

#define TINYSERVE_SCORE_INSTANCES(X) TINYSERVE_DTYPE_HEAD_DIMS(X)

}  // namespace tinyserve
