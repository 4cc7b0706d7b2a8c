// The two selections of the `twostage` selector (spec: kernels/twostage_reference.py), one
// CTA per (sequence, kv-head) row, everything decided on the device (no host sync, fixed
// output shapes, so a CUDA graph can hold the whole decode step).
//
//   stage 1 (candidates): items are the row's pages, keyed by their bound score (page_scores'
//     output); forced pages (the last page, sink pages) key +inf. Count: ceil(budget x
//     multiple), cut (candidate_top_p) to the fewest pages whose softmax(score + log tokens)
//     reaches top_p, never under the budget; then the k best, ascending page order.
//   stage 2 (keep): items are the candidates, keyed by their estimated mass: the mean over
//     the group's query heads of softmax over the candidates of each head's page logsumexp
//     (estimate_lse.cuh), each head's softmax from a one-pass online max/sum. Count: the
//     budget, or the fewest pages reaching top_p of that mass (forced first) clamped to
//     [forced pages, budget]; never more than there are candidates.
//
// Both counts come from a radix select over order-preserving integer keys (4 passes of 8
// bits, descending): a pass histograms the surviving keys' digit (count, and weight for a
// top-p count) in shared memory and one warp scans the 256 bins from the top for the bin
// where the running total reaches the target. Ties at the k-th key go to the lowest index;
// the kept items are compacted by a block scan in index order.
#pragma once

#include "common.cuh"

namespace tinyserve {

constexpr int kSelectThreads = 512;
constexpr int kMaxSelectItems = 16384;  // 128 KB of keys and weights: one CTA per SM still fits

struct TwoStageSelectParams {
  const float* values;     // stage 1: scores [B, H, N]; stage 2: page lse [B, H * group, N]
  const int* ids;          // stage 2: candidates [B, H, N] (logical pages, -1 pad); stage 1: null
  const int* seq_lens;     // [B]
  const int64_t* budget;   // [B] the budget's pages, before the forced / context clamp
  int* out;                // [B, H, out_width] logical pages ascending, -1 pad
  int64_t* kept;           // [B, H] pages kept (stage 2), or null
  int num_heads, group, num_items, out_width, block_size, sink_pages;
  double multiple;         // stage 1: candidates per budget page
  float top_p;             // 0: off
};

// Dynamic shared memory: a key and a weight per item.
__host__ __device__ constexpr int select_smem_bytes(int num_items) { return num_items * 8; }

__device__ __forceinline__ uint32_t order_key(float x) {  // larger float -> larger integer
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

template <int THREADS>
__device__ __forceinline__ float block_reduce(float x, bool is_max) {
  __shared__ float part[THREADS / 32];
  __shared__ float result;
  for (int o = 16; o > 0; o >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, x, o);
    x = is_max ? fmaxf(x, y) : x + y;
  }
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = x;
  __syncthreads();
  if (threadIdx.x < 32) {
    x = threadIdx.x < THREADS / 32 ? part[threadIdx.x] : (is_max ? -INFINITY : 0.f);
    for (int o = 16; o > 0; o >>= 1) {
      const float y = __shfl_xor_sync(0xffffffffu, x, o);
      x = is_max ? fmaxf(x, y) : x + y;
    }
    if (threadIdx.x == 0) result = x;
  }
  __syncthreads();
  const float r = result;
  __syncthreads();  // `result` is reused by the next call
  return r;
}

struct RadixState {
  uint32_t key;     // the key found (all 32 bits after the last pass)
  int above;        // items with a larger key
  float above_w;    // their weight
  int found;        // 0: the total never reached the target
};

// The key at which the running total in descending key order first reaches `target`:
// counts (weighted false) or weights `sw` (weighted true). Every thread must call it.
template <int THREADS>
__device__ __forceinline__ RadixState radix_find(const uint32_t* skey, const float* sw, int n, bool weighted, float target) {
  __shared__ int hc[256];
  __shared__ float hw[256];
  __shared__ RadixState st;
  if (threadIdx.x == 0) st = RadixState{0u, 0, 0.f, 1};
  uint32_t mask = 0u;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += THREADS) hc[i] = 0, hw[i] = 0.f;
    __syncthreads();
    const uint32_t prefix = st.key;
    if (!st.found) break;  // uniform: read after the barrier
    // Keys of one row share their leading bits (the sign and exponent of similar values),
    // so many lanes hit one bin: the lanes of a warp with the same digit add their count
    // once (__match_any_sync), whole warps iterate together for that.
    for (int base = 0; base < n; base += THREADS) {
      const int i = base + threadIdx.x;
      const uint32_t k = i < n ? skey[i] : 0u;
      const bool mine = i < n && (k & mask) == prefix;
      const int d = mine ? (int)((k >> shift) & 255) : 256;
      const unsigned peers = __match_any_sync(0xffffffffu, d);
      const bool leader = mine && (threadIdx.x & 31) == __ffs(peers) - 1;
      if (leader) atomicAdd(&hc[d], __popc(peers));
      if (weighted) {  // the same for the weights: each lane sums its digit's group
        const float w = mine ? sw[i] : 0.f;
        float sum = 0.f;
        for (int l = 0; l < 32; ++l) {
          const float wl = __shfl_sync(0xffffffffu, w, l);
          if ((peers >> l) & 1u) sum += wl;
        }
        if (leader) atomicAdd(&hw[d], sum);
      }
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      // lane owns bins 255 - 8 lane ... 248 - 8 lane (descending digits)
      int c[8];
      float w[8];
      int ct = 0;
      float wt = 0.f;
#pragma unroll
      for (int r = 0; r < 8; ++r) {
        const int d = 255 - (lane * 8 + r);
        ct += hc[d];
        wt += hw[d];
        c[r] = ct, w[r] = wt;
      }
      int cb = ct;
      float wb = wt;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {  // inclusive scans of the lane totals
        const int y = __shfl_up_sync(0xffffffffu, cb, o);
        const float z = __shfl_up_sync(0xffffffffu, wb, o);
        if (lane >= o) cb += y, wb += z;
      }
      cb -= ct, wb -= wt;  // exclusive: the bins above this lane's
      const int above = st.above;
      const float above_w = st.above_w;
      // the first bin (descending) where the running total reaches the target, with the
      // totals of the bins before it (registers only: no runtime-indexed arrays)
      int hit = -1, c_before = 0;
      float w_before = 0.f;
#pragma unroll
      for (int r = 7; r >= 0; --r) {
        const bool reach = weighted ? above_w + wb + w[r] >= target : float(above + cb + c[r]) >= target;
        if (reach) {
          hit = r;
          c_before = r ? c[r - 1] : 0;
          w_before = r ? w[r - 1] : 0.f;
        }
      }
      const unsigned ballot = __ballot_sync(0xffffffffu, hit >= 0);
      if (ballot == 0u) {
        if (lane == 0) st.found = 0;
      } else if (lane == __ffs(ballot) - 1) {
        const int d = 255 - (lane * 8 + hit);
        st.key = prefix | ((uint32_t)d << shift);
        st.above = above + cb + c_before;
        st.above_w = above_w + wb + w_before;
      }
    }
    mask |= 255u << shift;
    __syncthreads();
  }
  const RadixState r = st;
  __syncthreads();
  return r;
}

// The fewest items, in descending key order, whose weights sum to top_p (reference
// top_p_pages: #{prefixes below top_p} + 1; n + 1 when the total stays below it).
template <int THREADS>
__device__ __forceinline__ int top_p_count(const uint32_t* skey, const float* sw, int n, float top_p) {
  const RadixState r = radix_find<THREADS>(skey, sw, n, true, top_p);
  if (!r.found) return n + 1;
  // ties at the key found: in index order (the reference's order among ties is unspecified)
  int ties = 0;
  for (int i = threadIdx.x; i < n; i += THREADS) ties += skey[i] == r.key;
  ties = (int)block_reduce<THREADS>((float)ties, false);
  if (ties == 1) return r.above + 1;
  __shared__ int cnt;
  if (threadIdx.x == 0) {
    float cum = r.above_w;
    int c = r.above;
    for (int i = 0; i < n; ++i) {
      if (skey[i] != r.key) continue;
      ++c;
      cum += sw[i];
      if (cum >= top_p) break;
    }
    cnt = c;
  }
  __syncthreads();
  const int c = cnt;
  __syncthreads();
  return c;
}

// Writes the ids of the k largest keys in index order to out[0..k), -1 to out[k..width).
template <int THREADS>
__device__ __forceinline__ void write_top(const uint32_t* skey, int n, int k, const int* ids, int* out, int width) {
  k = min(k, n);
  uint32_t key = 0xFFFFFFFFu;
  int take = 0;
  if (k > 0) {
    const RadixState r = radix_find<THREADS>(skey, nullptr, n, false, (float)k);
    key = r.key;
    take = k - r.above;  // ties at the k-th key to keep, lowest index first
  }
  const int per = (n + THREADS - 1) / THREADS, lo = threadIdx.x * per, hi = min(n, lo + per);
  int ties = 0;
  for (int i = lo; i < hi; ++i) ties += skey[i] == key;
  int total;
  int tie_rank = block_exclusive_scan<THREADS>(ties, &total);
  int mine = 0;
  for (int i = lo; i < hi; ++i) {
    const uint32_t kk = skey[i];
    mine += k > 0 && (kk > key || (kk == key && tie_rank++ < take));
  }
  int pos = block_exclusive_scan<THREADS>(mine, &total);
  tie_rank -= ties;  // replay the same decisions, now writing
  for (int i = lo; i < hi && k > 0; ++i) {
    const uint32_t kk = skey[i];
    if ((kk > key || (kk == key && tie_rank++ < take)) && pos < width) out[pos++] = ids ? ids[i] : i;
  }
  for (int i = total + threadIdx.x; i < width; i += THREADS) out[i] = -1;
}

// STAGE 1: candidates from the bounds; STAGE 2: pages kept from the estimated masses.
template <int STAGE>
__global__ void __launch_bounds__(kSelectThreads, 2) twostage_select_kernel(const __grid_constant__ TwoStageSelectParams p) {
  extern __shared__ uint8_t smem_raw[];
  const int row = blockIdx.x, b = row / p.num_heads;
  const int N = p.num_items, BS = p.block_size;
  uint32_t* skey = reinterpret_cast<uint32_t*>(smem_raw);
  float* sw = reinterpret_cast<float*>(skey + N);
  const int L = max(p.seq_lens[b], 0);
  const int n = (L + BS - 1) / BS;                       // pages of the context
  const int nf = min(p.sink_pages, n) + (n >= 1 && n - 1 >= p.sink_pages ? 1 : 0);
  const int budget = (int)min((int64_t)n, max(p.budget[b], (int64_t)nf));
  int* out = p.out + (int64_t)row * p.out_width;
  if (STAGE == 1) {
    const float* sc = p.values + (int64_t)row * N;
    const int items = min(N, n);                          // pages past the context never count
    for (int i = threadIdx.x; i < items; i += kSelectThreads) {
      const bool forced = i == n - 1 || i < p.sink_pages;
      skey[i] = order_key(forced ? INFINITY : sc[i]);
    }
    int k = (int)ceil((double)budget * p.multiple - 1e-9);
    if (p.top_p > 0.f) {
      float mx = -INFINITY;
      for (int i = threadIdx.x; i < items; i += kSelectThreads) {
        const float lg = sc[i] + logf((float)min(BS, L - i * BS));
        sw[i] = lg;
        mx = fmaxf(mx, lg);
      }
      mx = block_reduce<kSelectThreads>(mx, true);
      float sum = 0.f;
      for (int i = threadIdx.x; i < items; i += kSelectThreads) sum += __expf(sw[i] - mx);
      sum = block_reduce<kSelectThreads>(sum, false);
      for (int i = threadIdx.x; i < items; i += kSelectThreads) sw[i] = __expf(sw[i] - mx) / sum;
      __syncthreads();
      const int need = top_p_count<kSelectThreads>(skey, sw, items, p.top_p);
      k = min(k, max(need, budget));
    }
    __syncthreads();
    write_top<kSelectThreads>(skey, items, min(k, n), nullptr, out, p.out_width);
  } else {
    const int G = p.group;
    const float* lse = p.values + (int64_t)row * G * N;
    const int* ids = p.ids + (int64_t)row * N;
    for (int i = threadIdx.x; i < N; i += kSelectThreads) sw[i] = 0.f;
    __syncthreads();
#pragma unroll 1
    for (int g = 0; g < G; ++g) {  // each head's softmax over the candidates: online max and sum
      const float* x = lse + (int64_t)g * N;
      float m = -INFINITY, s = 0.f;
      for (int i = threadIdx.x; i < N; i += kSelectThreads) {
        const float v = x[i];
        if (v == -INFINITY) continue;
        if (v > m) s = s * __expf(m - v) + 1.f, m = v;
        else s += __expf(v - m);
      }
      const float M = block_reduce<kSelectThreads>(m, true);
      const float S = block_reduce<kSelectThreads>(m == -INFINITY ? 0.f : s * __expf(m - M), false);
      if (M == -INFINITY) continue;  // no candidate in context: the reference's nan -> 0
      const float inv = 1.f / S;
      for (int i = threadIdx.x; i < N; i += kSelectThreads) sw[i] += __expf(x[i] - M) * inv;
    }
    int valid = 0;
    const float inv_g = 1.f / (float)G;
    for (int i = threadIdx.x; i < N; i += kSelectThreads) {
      const int pg = ids[i];
      const float mass = sw[i] * inv_g;
      sw[i] = mass;
      valid += pg >= 0;
      const bool forced = pg >= 0 && pg < n && (pg == n - 1 || pg < p.sink_pages);
      skey[i] = order_key(pg < 0 ? -INFINITY : forced ? INFINITY : mass);
    }
    const int n_cand = (int)block_reduce<kSelectThreads>((float)valid, false);
    int k = budget;
    if (p.top_p > 0.f) k = min(max(top_p_count<kSelectThreads>(skey, sw, N, p.top_p), nf), budget);
    k = min(k, n_cand);
    __syncthreads();
    write_top<kSelectThreads>(skey, N, k, ids, out, p.out_width);
    if (threadIdx.x == 0) p.kept[row] = k;
  }
}

}  // namespace tinyserve
