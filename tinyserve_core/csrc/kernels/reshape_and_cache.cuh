// reshape_and_cache: scatter new tokens' K/V rows into their cache slots and keep the
// channel-wise key min/max of every touched page exact.
//
// Without metadata, cache_write_kernel copies rows (one thread per 16-byte vector).
// With metadata, cache_write_meta_kernel does it in one pass: the token array is cut into
// chunks of consecutive tokens, and a CTA owns every *run* (consecutive tokens on one page)
// that starts in its chunk, even where the run reaches into the next chunk. Its threads
// copy the run's rows (a row group each, one 16-byte column per thread) and fold the key
// values into min/max partials in registers, which meet in shared memory, so no page is
// read back. The page's new bounds are then
//   - the run's min/max when the run starts at offset 0 (a fresh page), else
//   - the run's min/max merged with the page's old bounds, which cover slots 0..first-1
//     because pages fill in order (each call continues where the previous one stopped).
// Both equal the reference's recomputation over slots 0..last. When that reasoning does not
// hold - a page written by two runs of one call, or a run whose offsets are not consecutive
// ascending - the page is listed as irregular, and the CTA that finishes last (a grid-wide
// counter after a fence) recomputes its bounds from the cache over slots 0..highest offset,
// as the reference does. Scratch: [done CTAs, irregular count, {runs, highest offset} per
// block, irregular list], zeroed before the launch.
#pragma once

#include "common.cuh"

namespace tinyserve {

constexpr int kCacheMetaThreads = 256;  // row groups x a column team (see the meta kernel)
constexpr int kCacheMetaRows = 8;       // K and V rows per thread in flight: 16 loads
constexpr int kCacheMetaCtasPerSm = 2;  // 128 registers

struct CacheWriteParams {
  const void* key;         // [T, Hkv, D], rows strided by key_stride (elements), heads by head_stride
  const void* value;
  void* k_cache;           // [NB, BS, Hkv, D]
  void* v_cache;
  void* meta;              // [NB, 2, Hkv, D] or nullptr
  const int64_t* slot_mapping;  // [T], -1 skips
  int* scratch;            // [2 + 2 * NB + T] (meta only), see above
  const int* runs;         // [R, 2] first token, token count of each run (the runs kernel), or nullptr
  int num_runs;
  int64_t key_stride, key_head_stride, value_stride, value_head_stride;
  int num_tokens, num_kv_heads, head_dim, block_size, num_blocks;
  int chunk;               // tokens per CTA chunk (meta kernel)
};

// One thread per 16-byte vector of a token's row (K and V together).
template <typename T>
__global__ void __launch_bounds__(256) cache_write_kernel(const __grid_constant__ CacheWriteParams p) {
  constexpr int VEC = 16 / sizeof(T);
  const int vec_per_head = p.head_dim / VEC;
  const int vec_per_row = p.num_kv_heads * vec_per_head;
  const int64_t total = (int64_t)p.num_tokens * vec_per_row;
  pdl_entry();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int t = (int)(i / vec_per_row);
    const int v = (int)(i - (int64_t)t * vec_per_row);
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;
    const int h = v / vec_per_head, c = v - h * vec_per_head;
    const T* ks = static_cast<const T*>(p.key) + t * p.key_stride + h * p.key_head_stride + c * VEC;
    const T* vs = static_cast<const T*>(p.value) + t * p.value_stride + h * p.value_head_stride + c * VEC;
    const uint4 kv = *reinterpret_cast<const uint4*>(ks);
    const uint4 vv = *reinterpret_cast<const uint4*>(vs);
    const int64_t dst = slot * vec_per_row + v;  // slot * row, in 16-byte vectors
    reinterpret_cast<uint4*>(p.k_cache)[dst] = kv;
    reinterpret_cast<uint4*>(p.v_cache)[dst] = vv;
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void fold_minmax(const uint4& r, float (&lo)[VEC], float (&hi)[VEC]) {
  const T* e = reinterpret_cast<const T*>(&r);
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    lo[i] = fminf(lo[i], to_float(e[i]));
    hi[i] = fmaxf(hi[i], to_float(e[i]));
  }
}

template <typename T, int VEC>
__device__ __forceinline__ uint4 pack_vec(const float (&x)[VEC]) {
  uint4 r;
  T* e = reinterpret_cast<T*>(&r);
#pragma unroll
  for (int i = 0; i < VEC; ++i) e[i] = from_float<T>(x[i]);  // min/max of representable values: exact
  return r;
}

// Slow path for irregular pages (run by one CTA): min/max over slots 0..last of the cache.
// Reads go through L2 (__ldcg): the rows were written by other CTAs of this grid.
template <typename T>
__device__ __noinline__ void recompute_page_meta(const CacheWriteParams& p, int64_t blk, int last) {
  constexpr int VEC = 16 / sizeof(T);
  const int vec_per_row = p.num_kv_heads * p.head_dim / VEC;
  const uint4* page = reinterpret_cast<const uint4*>(p.k_cache) + blk * p.block_size * vec_per_row;
  uint4* mn = reinterpret_cast<uint4*>(p.meta) + blk * 2 * vec_per_row;
  for (int v = threadIdx.x; v < vec_per_row; v += blockDim.x) {
    float lo[VEC], hi[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) lo[i] = INFINITY, hi[i] = -INFINITY;
    for (int s = 0; s <= last; ++s) fold_minmax<T, VEC>(__ldcg(page + (int64_t)s * vec_per_row + v), lo, hi);
    mn[v] = pack_vec<T, VEC>(lo);
    mn[v + vec_per_row] = pack_vec<T, VEC>(hi);
  }
}

// Element-wise min / max of two 16-byte vectors of T (exact: the result is one of the inputs;
// a NaN loses to a number, as fminf).
template <typename T> struct VecMinMax;
template <> struct VecMinMax<float> {
  __device__ __forceinline__ static uint4 min(uint4 a, uint4 b) {
    return make_uint4(__float_as_uint(fminf(__uint_as_float(a.x), __uint_as_float(b.x))),
                      __float_as_uint(fminf(__uint_as_float(a.y), __uint_as_float(b.y))),
                      __float_as_uint(fminf(__uint_as_float(a.z), __uint_as_float(b.z))),
                      __float_as_uint(fminf(__uint_as_float(a.w), __uint_as_float(b.w))));
  }
  __device__ __forceinline__ static uint4 max(uint4 a, uint4 b) {
    return make_uint4(__float_as_uint(fmaxf(__uint_as_float(a.x), __uint_as_float(b.x))),
                      __float_as_uint(fmaxf(__uint_as_float(a.y), __uint_as_float(b.y))),
                      __float_as_uint(fmaxf(__uint_as_float(a.z), __uint_as_float(b.z))),
                      __float_as_uint(fmaxf(__uint_as_float(a.w), __uint_as_float(b.w))));
  }
};
// The 16-bit types use the paired instructions (__hmin2 / __hmax2), no conversion to float.
template <typename T2> struct VecMinMax2 {
  __device__ __forceinline__ static uint32_t mn(uint32_t a, uint32_t b) {
    const T2 r = __hmin2(*reinterpret_cast<T2*>(&a), *reinterpret_cast<T2*>(&b));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
  __device__ __forceinline__ static uint32_t mx(uint32_t a, uint32_t b) {
    const T2 r = __hmax2(*reinterpret_cast<T2*>(&a), *reinterpret_cast<T2*>(&b));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
  __device__ __forceinline__ static uint4 min(uint4 a, uint4 b) {
    return make_uint4(mn(a.x, b.x), mn(a.y, b.y), mn(a.z, b.z), mn(a.w, b.w));
  }
  __device__ __forceinline__ static uint4 max(uint4 a, uint4 b) {
    return make_uint4(mx(a.x, b.x), mx(a.y, b.y), mx(a.z, b.z), mx(a.w, b.w));
  }
};
template <> struct VecMinMax<__half> : VecMinMax2<__half2> {};
template <> struct VecMinMax<__nv_bfloat16> : VecMinMax2<__nv_bfloat162> {};

// Tokens t..e-1, one run on one page starting at slot0: copies their K and V rows (thread
// (g, c) takes rows g, g+G, ... in 16-byte column c, kCacheMetaRows of each in flight) and,
// when the run is in order (slots slot0, slot0+1, ...), sets the page's bounds `mn` to the
// run's min/max, merged with the old bounds when `merge` (the run continues the page). The
// CTA's G partials meet in shared memory (`part`, `has`). slot_at(i) gives an out-of-order
// run's slots (called by whole warps with warp-uniform arguments).
template <typename T, class SlotAt>
__device__ __forceinline__ void write_run(const CacheWriteParams& p, int t, int e, int64_t slot0, bool in_order,
                                          bool merge, uint4* mn, SlotAt slot_at, uint4 (&part)[2][kCacheMetaThreads],
                                          bool (&has)[kCacheMetaThreads]) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int R = kCacheMetaRows;
  using MM = VecMinMax<T>;
  const int vec_per_head = p.head_dim / VEC;
  const int vec_per_row = p.num_kv_heads * vec_per_head;
  const int C = min(kCacheMetaThreads / 2, (vec_per_row + 31) / 32 * 32);  // whole warps
  const int G = kCacheMetaThreads / C;
  const int g = threadIdx.x / C, c = threadIdx.x - g * C;  // g is uniform within a warp
  for (int v0 = 0; v0 < vec_per_row; v0 += C) {
    const int v = v0 + c;
    const bool act = v < vec_per_row;
    const int h = v / vec_per_head, cv = v - h * vec_per_head;
    const uint4* ks = reinterpret_cast<const uint4*>(static_cast<const T*>(p.key) + h * p.key_head_stride + cv * VEC);
    const uint4* vs = reinterpret_cast<const uint4*>(static_cast<const T*>(p.value) + h * p.value_head_stride + cv * VEC);
    const int64_t ks_row = p.key_stride / VEC, vs_row = p.value_stride / VEC;  // in 16-byte vectors
    uint4 lo, hi;
    bool have = false;
    // threads past the last whole row group (C not dividing the CTA, e.g. 96) idle: a third
    // group would re-copy group 0's rows
    for (int i0 = t + g; g < G && i0 < e; i0 += G * R) {
      uint4 rk[R], rv[R];
#pragma unroll
      for (int u = 0; u < R; ++u) {
        const int i = i0 + u * G;
        if (act && i < e) {
          rk[u] = ks[(int64_t)i * ks_row];
          rv[u] = vs[(int64_t)i * vs_row];
        }
      }
#pragma unroll
      for (int u = 0; u < R; ++u) {
        const int i = i0 + u * G;
        if (i < e) {  // warp-uniform
          // in order, the run fills consecutive slots: no shuffle, nor a load past the window
          const int64_t dst = (in_order ? slot0 + (i - t) : slot_at(i)) * vec_per_row + v;
          if (act) {
            reinterpret_cast<uint4*>(p.k_cache)[dst] = rk[u];
            reinterpret_cast<uint4*>(p.v_cache)[dst] = rv[u];
            lo = have ? MM::min(lo, rk[u]) : rk[u];
            hi = have ? MM::max(hi, rk[u]) : rk[u];
            have = true;
          }
        }
      }
    }
    if (in_order) {  // uniform: the partials meet in shared memory
      part[0][threadIdx.x] = lo;
      part[1][threadIdx.x] = hi;
      has[threadIdx.x] = have;
      __syncthreads();
      if (g < 2 && act) {  // g 0: the minimum, g 1: the maximum (C <= 128, so G >= 2)
        const int k = g;
        uint4 b = merge ? mn[v + k * vec_per_row] : make_uint4(0, 0, 0, 0);  // the old bounds
        bool any = merge;
        for (int gg = 0; gg < G; ++gg) {
          const int j = gg * C + c;
          if (!has[j]) continue;
          b = !any ? part[k][j] : (k == 0 ? MM::min(b, part[k][j]) : MM::max(b, part[k][j]));
          any = true;
        }
        mn[v + k * vec_per_row] = b;
      }
      __syncthreads();
    }
  }
}

// Row-parallel: a CTA's threads form G row groups of a column team of C threads (C covers a
// row's 16-byte vectors, G = threads / C); thread (g, c) copies the K and V rows g, g+G, ...
// of a run in column c, kCacheMetaRows of each in flight, and folds its K rows into a partial
// min/max; the G partials meet in shared memory. (The earlier layout, half the CTA per K or V
// and each thread looping over all rows of a run, reached 62% of copy bandwidth on an H200;
// this one, with a persistent grid and the run scan done from a warp-wide slot window, 80%+.)
// CTAs are persistent (about two per SM) and take chunks k, k + grid, ...; a warp holds the
// slots of tokens [chunk start - 1, chunk start + 31) in one register (one coalesced load,
// prefetched for the next chunk while this one streams), so finding the runs costs shuffles,
// not a dependent global load per token.
template <typename T>
__global__ void __launch_bounds__(kCacheMetaThreads, kCacheMetaCtasPerSm)
cache_write_meta_kernel(const __grid_constant__ CacheWriteParams p) {
  constexpr int VEC = 16 / sizeof(T);
  const int vec_per_row = p.num_kv_heads * p.head_dim / VEC;
  const int lane = threadIdx.x & 31;
  const int64_t BS = p.block_size;
  int* done = p.scratch;
  int* irregular_count = p.scratch + 1;
  int* page_state = p.scratch + 2;  // {runs, highest offset} per block
  int* irregular = p.scratch + 2 + 2 * (int64_t)p.num_blocks;
  __shared__ uint4 part[2][kCacheMetaThreads];
  __shared__ bool has[kCacheMetaThreads];
  __shared__ bool is_last;
  pdl_entry();

  const int nchunks = (p.num_tokens + p.chunk - 1) / p.chunk;
  auto window = [&](int ck) -> int64_t {  // slot of token ck * chunk - 1 + lane (-2: none)
    const int tok = ck * p.chunk - 1 + lane;
    return ck < nchunks && tok >= 0 && tok < p.num_tokens ? p.slot_mapping[tok] : -2;
  };
  int64_t win = window(blockIdx.x);
  for (int ck = blockIdx.x; ck < nchunks; ck += gridDim.x) {
    const int t0 = ck * p.chunk, t_end = min(p.num_tokens, t0 + p.chunk);
    const int64_t win_here = win;
    win = window(ck + gridDim.x);  // in flight while this chunk streams
    // Every call is made by whole warps with warp-uniform arguments (the shuffle needs all lanes).
    auto slot_at = [&](int tok) -> int64_t {
      const int j = tok - (t0 - 1);
      const int64_t w = __shfl_sync(0xffffffffu, win_here, j & 31);
      return j >= 0 && j < 32 ? w : p.slot_mapping[tok];
    };
    int t = t0;
    if (t > 0) {  // tokens continuing a run from an earlier chunk are that run's
      const int64_t prev = slot_at(t - 1);
      if (prev >= 0) {
        const int64_t lo = prev / BS * BS;
        while (t < t_end) {
          const int64_t s = slot_at(t);
          if (s < lo || s >= lo + BS) break;
          ++t;
        }
      }
    }
    while (t < t_end) {
      const int64_t slot0 = slot_at(t);
      if (slot0 < 0) {
        ++t;
        continue;
      }
      const int64_t blk = slot0 / BS, page_lo = blk * BS;
      const int first = (int)(slot0 - page_lo);
      int e = t + 1, prev_off = first, last = first;
      bool in_order = true;  // offsets first, first+1, ...: the run fills slots first..last
      for (; e < p.num_tokens; ++e) {
        const int64_t s = slot_at(e);
        if (s < page_lo || s >= page_lo + BS) break;  // also ends at a padding token (-1)
        const int off = (int)(s - page_lo);
        in_order &= off == prev_off + 1;
        prev_off = off;
        last = max(last, off);
      }
      uint4* mn = reinterpret_cast<uint4*>(p.meta) + blk * 2 * vec_per_row;
      write_run<T>(p, t, e, slot0, in_order, in_order && first > 0, mn, slot_at, part, has);
      if (threadIdx.x == 0) {
        // A page is irregular once it has a second run or an out-of-order run; the run that
        // makes it so lists it (exactly once).
        const int add = in_order ? 1 : 2;
        const int before = atomicAdd(page_state + 2 * blk, add);
        atomicMax(page_state + 2 * blk + 1, last);
        if (before < 2 && before + add >= 2) irregular[atomicAdd(irregular_count, 1)] = (int)blk;
      }
      t = e;
    }
  }

  // The last CTA to finish repairs the irregular pages, after every row of the call landed:
  // the barrier orders the CTA's writes before thread 0's fence, which is cumulative.
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    is_last = atomicAdd(done, 1) == (int)gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const int n = *(volatile int*)irregular_count;
  for (int j = 0; j < n; ++j) {
    const int blk = *(volatile int*)(irregular + j);
    recompute_page_meta<T>(p, blk, *(volatile int*)(page_state + 2 * (int64_t)blk + 1));
  }
}

// The caller's runs (`runs`: first token and count of each; `page_runs` in
// kernels/cache_runs.py builds them from the slot mapping): every run lies on one page, its
// slots consecutive ascending, no page twice in the call, and a run that starts past
// offset 0 continues its page where an earlier call stopped. The runs are then the meta
// kernel's in-order runs without its bookkeeping: no scratch to clear, no run scan, no
// atomics and no grid-wide fence. CTAs take runs r, r + grid, ...
template <typename T>
__global__ void __launch_bounds__(kCacheMetaThreads, kCacheMetaCtasPerSm)
cache_write_runs_meta_kernel(const __grid_constant__ CacheWriteParams p) {
  constexpr int VEC = 16 / sizeof(T);
  const int vec_per_row = p.num_kv_heads * p.head_dim / VEC;
  __shared__ uint4 part[2][kCacheMetaThreads];
  __shared__ bool has[kCacheMetaThreads];
  pdl_entry();
  for (int r = blockIdx.x; r < p.num_runs; r += gridDim.x) {
    const int t = p.runs[2 * r], e = t + p.runs[2 * r + 1];
    const int64_t slot0 = p.slot_mapping[t];
    const int64_t blk = slot0 / p.block_size;
    uint4* mn = reinterpret_cast<uint4*>(p.meta) + blk * 2 * vec_per_row;
    write_run<T>(p, t, e, slot0, true, slot0 > blk * p.block_size, mn, [](int) { return (int64_t)0; }, part,
                 has);
  }
}

// One CTA per token, for a call whose tokens all lie in different pages (the caller says so:
// a decode step writes one token per sequence, each into its own last page). A token's
// page bounds are then its K row when it takes the page's first slot, else the old bounds
// (slots before it, written by earlier calls: pages fill in order) merged with the row, as
// the meta kernel's runs of one token give; without its call-wide bookkeeping there is no
// scratch to clear (a memset per layer), no atomics and no grid-wide fence.
template <typename T>
__global__ void __launch_bounds__(256) cache_write_token_meta_kernel(const __grid_constant__ CacheWriteParams p) {
  constexpr int VEC = 16 / sizeof(T);
  using MM = VecMinMax<T>;
  const int vec_per_head = p.head_dim / VEC;
  const int vec_per_row = p.num_kv_heads * vec_per_head;
  pdl_entry();
  const int t = blockIdx.x;
  const int64_t slot = p.slot_mapping[t];
  if (slot < 0) return;  // padding
  const int64_t blk = slot / p.block_size;
  const bool fresh = slot == blk * p.block_size;
  uint4* mn = reinterpret_cast<uint4*>(p.meta) + blk * 2 * vec_per_row;
  for (int i = threadIdx.x; i < 2 * vec_per_row; i += blockDim.x) {
    const bool is_key = i < vec_per_row;
    const int v = is_key ? i : i - vec_per_row;
    const int h = v / vec_per_head, c = v - h * vec_per_head;
    const T* src = is_key ? static_cast<const T*>(p.key) + t * p.key_stride + h * p.key_head_stride
                          : static_cast<const T*>(p.value) + t * p.value_stride + h * p.value_head_stride;
    const uint4 r = *reinterpret_cast<const uint4*>(src + c * VEC);
    reinterpret_cast<uint4*>(is_key ? p.k_cache : p.v_cache)[slot * vec_per_row + v] = r;
    if (is_key) {
      if (fresh) {
        mn[v] = r;
        mn[v + vec_per_row] = r;
      } else {
        const uint4 lo = mn[v], hi = mn[v + vec_per_row];
        mn[v] = MM::min(lo, r);
        mn[v + vec_per_row] = MM::max(hi, r);
      }
    }
  }
}

#define TINYSERVE_CACHE_INSTANCES(X) \
  X(float)                           \
  X(__half)                          \
  X(__nv_bfloat16)

}  // namespace tinyserve
