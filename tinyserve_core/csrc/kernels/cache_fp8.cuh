// reshape_and_cache into an FP8 (e4m3) cache with a power-of-two scale per (page, kv-head)
// of K and of V (kernels/fp8_reference.py is the spec).
//
// A page's scale must cover every token it holds, and the tokens of one call may reach a
// page in any order, so the write takes three launches (scratch zeroed before the first):
//   1. fp8_cache_amax_kernel: one warp per (token, kv-head) folds |K| and |V| over the head
//      into the page's amax (atomicMax on the float bits, all non-negative) and the lowest
//      offset the call writes to each page; the first token to reach a page lists it.
//   2. fp8_cache_scale_kernel: per listed page and head, the new scale is the smallest power
//      of two 2^e with amax <= 448 * 2^e; a page the call continues (lowest offset > 0: its
//      slots below hold earlier tokens, pages fill in order) keeps at least its old scale.
//      Where the scale grew, those earlier tokens are re-quantised by old / new, a power of
//      two: exact except for values that fall into e4m3's subnormal range.
//   3. fp8_cache_write_kernel: each 16-byte vector of the new K/V rows, times 1 / scale
//      (exact), rounded to e4m3 (nearest even, saturating) and stored.
//   4. (with page bounds) fp8_cache_meta_kernel: per listed page, the channel-wise min/max
//      of the key codes in slots 0..highest offset written, as the reference computes them.
// Scratch: [NB] block_size - lowest offset written (0: untouched) | [NB, 2, Hkv] amax bits |
// [NB] highest offset written + 1 | [1] listed pages | [T] the list.
// A call whose caller gives its page runs (a prefill: every page in one run of consecutive
// slots) or promises one token per page (a decode step) takes one launch instead,
// fp8_cache_runs_kernel: the CTA that owns a run owns its page, so the page's amax, new scale,
// re-quantisation and the run's stores happen in that CTA, with no scratch and no atomics in
// global memory. It keeps the page bounds from the run's key codes and the old bounds (the
// page is not read back): where the scale grew, the old min and max are re-quantised as the
// page's earlier codes are, and rounding is monotone, so they stay the min and max of those
// codes (fp8_reference.py).
#pragma once

#include <cuda_fp8.h>

#include "reshape_and_cache.cuh"

namespace tinyserve {

constexpr int kFp8MinExp = -100;  // the scale of an all-zero page (any tiny power of two)

// K and V are handled alike, so each comes as entry 0 (K) or 1 (V) of the pairs below.
struct Fp8CacheParams {
  const void* src[2];          // [T, Hkv, D] new K / V rows
  int64_t row_stride[2], head_stride[2];  // of src, in elements (head_dim contiguous)
  uint8_t* cache[2];           // [NB, BS, Hkv, D] e4m3
  float* scales;               // [NB, 2, Hkv]
  uint8_t* meta;               // [NB, 2, Hkv, D] e4m3 key min / max codes, or nullptr
  const int64_t* slot_mapping;
  int* scratch;
  int num_tokens, num_kv_heads, head_dim, block_size, num_blocks;
  const int* runs;  // fp8_cache_runs_kernel: [num_runs, 2] (first token, count), nullptr: one token a run
  int num_runs;
};

// Row (token t, head h) of new K (kv = 0) or V (kv = 1).
template <typename T>
__device__ __forceinline__ const T* fp8_src_row(const Fp8CacheParams& p, int kv, int t, int h) {
  return static_cast<const T*>(p.src[kv]) + t * p.row_stride[kv] + h * p.head_stride[kv];
}

struct Fp8Scratch {
  int* first;         // [NB]
  unsigned* amax;     // [NB, 2, Hkv]
  int* last;          // [NB]
  int* count;
  int* list;
  __device__ explicit Fp8Scratch(const Fp8CacheParams& p)
      : first(p.scratch),
        amax(reinterpret_cast<unsigned*>(p.scratch + p.num_blocks)),
        last(p.scratch + (int64_t)p.num_blocks * (1 + 2 * p.num_kv_heads)),
        count(last + p.num_blocks),
        list(count + 1) {}
};

// Smallest 2^e (e >= kFp8MinExp) with amax <= 448 * 2^e: amax = m 2^E, m in [0.5, 1), and
// 448 = 0.875 * 2^9, so e = E - 9, or E - 8 when m > 0.875. Exact integer logic.
__device__ __forceinline__ float fp8_pow2_scale(float amax) {
  if (!(amax > 0.f)) return ldexpf(1.f, kFp8MinExp);
  int e;
  const float m = frexpf(amax, &e);
  return ldexpf(1.f, max(e - 9 + (m > 0.875f ? 1 : 0), kFp8MinExp));
}

__device__ __forceinline__ float e4m3_to_float(uint8_t b) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b), __NV_E4M3)));
}

__device__ __forceinline__ uint32_t float2_to_e4m3x2(float a, float b) {
  return __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
}

// The largest |x| of one 16-byte vector of new K/V.
template <typename T>
__device__ __forceinline__ float fp8_vec_absmax(const uint4& x) {
  constexpr int VEC = 16 / sizeof(T);
  const T* e = reinterpret_cast<const T*>(&x);
  float mx = 0.f;
#pragma unroll
  for (int i = 0; i < VEC; ++i) mx = fmaxf(mx, fabsf(to_float(e[i])));
  return mx;
}

// One 16-byte vector of new K/V times inv (1 / its page's scale, exact), rounded to e4m3 and
// stored at dst (16 / sizeof(T) bytes); the codes folded into lo / hi (fp16 pairs, exact for
// every e4m3 value: VEC / 2 registers each) when given.
template <typename T>
__device__ __forceinline__ void fp8_store_vec(const uint4& x, float inv, uint8_t* dst, __half2* lo = nullptr,
                                              __half2* hi = nullptr) {
  constexpr int VEC = 16 / sizeof(T);  // 8 (16-bit inputs) or 4 (fp32): VEC bytes out
  const T* e = reinterpret_cast<const T*>(&x);
  uint32_t out[VEC / 4];
#pragma unroll
  for (int q = 0; q < VEC / 4; ++q)
    out[q] = float2_to_e4m3x2(to_float(e[4 * q]) * inv, to_float(e[4 * q + 1]) * inv) |
             (float2_to_e4m3x2(to_float(e[4 * q + 2]) * inv, to_float(e[4 * q + 3]) * inv) << 16);
  if constexpr (VEC == 8) *reinterpret_cast<uint2*>(dst) = make_uint2(out[0], out[VEC / 4 - 1]);
  else *reinterpret_cast<uint32_t*>(dst) = out[0];
  if (lo != nullptr) {
#pragma unroll
    for (int i = 0; i < VEC / 2; ++i) {  // pair i: channels 2i, 2i + 1
      const __half2 v = __half2(__nv_cvt_fp8x2_to_halfraw2(
          static_cast<__nv_fp8x2_storage_t>((out[i / 2] >> (16 * (i % 2))) & 0xffffu), __NV_E4M3));
      lo[i] = __hmin2(lo[i], v);
      hi[i] = __hmax2(hi[i], v);
    }
  }
}

// Shared-memory float min / max through the integer atomics (no NaN): a non-negative float
// orders as its int bits, a negative one inversely as its unsigned bits. -0 goes in as +0: its
// int bits are INT_MIN, which would beat every negative value in the min and lose to -inf
// in the max (the first GPU run caught the min).
__device__ __forceinline__ void atomic_min_float(float* a, float v) {
  if (v == 0.f) v = 0.f;
  if (v >= 0.f) atomicMin(reinterpret_cast<int*>(a), __float_as_int(v));
  else atomicMax(reinterpret_cast<unsigned*>(a), __float_as_uint(v));
}
__device__ __forceinline__ void atomic_max_float(float* a, float v) {
  if (v == 0.f) v = 0.f;
  if (v >= 0.f) atomicMax(reinterpret_cast<int*>(a), __float_as_int(v));
  else atomicMin(reinterpret_cast<unsigned*>(a), __float_as_uint(v));
}

// Four e4m3 codes times f (a power of two) rounded back to e4m3, as fp8_requant_page does.
__device__ __forceinline__ uint32_t fp8_requant4(uint32_t b, float f) {
  return float2_to_e4m3x2(e4m3_to_float(b & 0xff) * f, e4m3_to_float((b >> 8) & 0xff) * f) |
         (float2_to_e4m3x2(e4m3_to_float((b >> 16) & 0xff) * f, e4m3_to_float(b >> 24) * f) << 16);
}

// Page blk's earlier tokens (slots 0..first-1) re-quantised by ratio[j] (old / new scale of
// K/V and head j = kv * Hkv + h; 1: unchanged), 16 bytes a step, by the whole CTA.
__device__ __forceinline__ void fp8_requant_page(const Fp8CacheParams& p, int64_t blk, int first, const float* ratio) {
  const int H = p.num_kv_heads, D = p.head_dim, nch = D / 16, per_slot = 2 * H * nch;
  for (int v = threadIdx.x; v < first * per_slot; v += blockDim.x) {
    const int slot = v / per_slot, r = v - slot * per_slot, j = r / nch, c = r - j * nch;
    const float f = ratio[j];
    if (f == 1.f) continue;
    uint4* ptr = reinterpret_cast<uint4*>(p.cache[j / H] + ((blk * p.block_size + slot) * H + j % H) * D + 16 * c);
    uint4 x = *ptr;
    uint32_t* w = reinterpret_cast<uint32_t*>(&x);
#pragma unroll
    for (int q = 0; q < 4; ++q) w[q] = fp8_requant4(w[q], f);
    *ptr = x;
  }
}

// Page blk's new scale for K/V and head j from the call's amax (the old one kept as a floor
// when the call continues the page: first > 0); returns old / new (1: unchanged).
__device__ __forceinline__ float fp8_update_scale(const Fp8CacheParams& p, int64_t blk, int j, int first, float amax) {
  float* s = p.scales + blk * 2 * p.num_kv_heads + j;
  const float old = *s;
  const float need = fp8_pow2_scale(amax);
  const float now = first > 0 ? fmaxf(old, need) : need;
  *s = now;
  return first > 0 && now != old ? old / now : 1.f;
}

template <typename T>
__global__ void __launch_bounds__(256) fp8_cache_amax_kernel(const __grid_constant__ Fp8CacheParams p) {
  constexpr int VEC = 16 / sizeof(T);
  const Fp8Scratch sc(p);
  const int lane = threadIdx.x & 31, nvec = p.head_dim / VEC, H = p.num_kv_heads;
  const int64_t items = (int64_t)p.num_tokens * H;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < items; w += warps) {
    const int t = (int)(w / H), h = (int)(w - (int64_t)t * H);
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;  // the whole warp shares the token
    float km = 0.f, vm = 0.f;
    for (int v = lane; v < 2 * nvec; v += 32) {
      const bool is_k = v < nvec;
      const int c = is_k ? v : v - nvec;
      const float mx = fp8_vec_absmax<T>(*reinterpret_cast<const uint4*>(fp8_src_row<T>(p, is_k ? 0 : 1, t, h) + c * VEC));
      if (is_k) km = fmaxf(km, mx);
      else vm = fmaxf(vm, mx);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      km = fmaxf(km, __shfl_xor_sync(0xffffffffu, km, o));
      vm = fmaxf(vm, __shfl_xor_sync(0xffffffffu, vm, o));
    }
    if (lane == 0) {
      const int64_t blk = slot / p.block_size;
      const int off = (int)(slot - blk * p.block_size);
      atomicMax(sc.amax + (blk * 2) * H + h, __float_as_uint(km));
      atomicMax(sc.amax + (blk * 2 + 1) * H + h, __float_as_uint(vm));
      if (h == 0) {
        if (p.meta != nullptr) atomicMax(sc.last + blk, off + 1);
        if (atomicMax(sc.first + blk, p.block_size - off) == 0) sc.list[atomicAdd(sc.count, 1)] = (int)blk;
      }
    }
  }
}

// One CTA per listed page (grid-stride); dynamic shared memory: 2 * Hkv floats.
__global__ void __launch_bounds__(256) fp8_cache_scale_kernel(const __grid_constant__ Fp8CacheParams p) {
  extern __shared__ float ratio[];  // per (K/V, head): old / new scale, 1 = unchanged
  const Fp8Scratch sc(p);
  const int H = p.num_kv_heads;
  const int n = *sc.count;
  for (int i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t blk = sc.list[i];
    const int first = p.block_size - sc.first[blk];
    for (int j = threadIdx.x; j < 2 * H; j += blockDim.x)
      ratio[j] = fp8_update_scale(p, blk, j, first, __uint_as_float(sc.amax[blk * 2 * H + j]));
    __syncthreads();
    fp8_requant_page(p, blk, first, ratio);
    __syncthreads();  // `ratio` is reused by the next page
  }
}

template <typename T>
__global__ void __launch_bounds__(256) fp8_cache_write_kernel(const __grid_constant__ Fp8CacheParams p) {
  constexpr int VEC = 16 / sizeof(T);  // 8 (16-bit inputs) or 4 (fp32): VEC bytes out
  const int H = p.num_kv_heads, nvec = p.head_dim / VEC, per_tok = 2 * H * nvec;
  const int64_t total = (int64_t)p.num_tokens * per_tok;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int t = (int)(i / per_tok), r = (int)(i - (int64_t)t * per_tok);
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;
    const int kv = r / (H * nvec), hc = r - kv * H * nvec, h = hc / nvec, c = hc - h * nvec;
    const uint4 x = *reinterpret_cast<const uint4*>(fp8_src_row<T>(p, kv, t, h) + c * VEC);
    const int64_t blk = slot / p.block_size;
    const float inv = 1.f / p.scales[(blk * 2 + kv) * H + h];  // a power of two: exact
    fp8_store_vec<T>(x, inv, p.cache[kv] + (slot * H + h) * p.head_dim + c * VEC);
  }
}

// The page bounds of each listed page from its key codes in slots 0..last (one CTA a page,
// grid-stride; a thread a 16-byte column of a head).
__global__ void __launch_bounds__(256) fp8_cache_meta_kernel(const __grid_constant__ Fp8CacheParams p) {
  const Fp8Scratch sc(p);
  const int H = p.num_kv_heads, D = p.head_dim, ncol = H * D / 16;
  const int n = *sc.count;
  for (int i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t blk = sc.list[i];
    const int last = sc.last[blk];  // slots 0..last-1
    for (int v = threadIdx.x; v < ncol; v += blockDim.x) {
      float lo[16], hi[16];
#pragma unroll
      for (int e = 0; e < 16; ++e) lo[e] = INFINITY, hi[e] = -INFINITY;
      for (int slot = 0; slot < last; ++slot) {
        const uint4 x = *reinterpret_cast<const uint4*>(p.cache[0] + (blk * p.block_size + slot) * H * D + 16 * v);
        const uint32_t* w = reinterpret_cast<const uint32_t*>(&x);
#pragma unroll
        for (int e = 0; e < 16; ++e) {
          const float f = e4m3_to_float((w[e / 4] >> (8 * (e % 4))) & 0xff);
          lo[e] = fminf(lo[e], f);
          hi[e] = fmaxf(hi[e], f);
        }
      }
      uint4 out[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float* x = r ? hi : lo;
        uint32_t* w = reinterpret_cast<uint32_t*>(&out[r]);
#pragma unroll
        for (int q = 0; q < 4; ++q)
          w[q] = float2_to_e4m3x2(x[4 * q], x[4 * q + 1]) | (float2_to_e4m3x2(x[4 * q + 2], x[4 * q + 3]) << 16);
        *reinterpret_cast<uint4*>(p.meta + (blk * 2 + r) * H * D + 16 * v) = out[r];
      }
    }
  }
}

// The whole write in one launch for a call of page runs (p.runs; nullptr: every token is its
// own run, the caller's promise of one token per page): one CTA per run (grid-stride), which
// owns the run's page. A thread keeps fixed vectors q of a token's 2 x Hkv x head_dim/VEC (its
// K/V, head and column decoded once) and walks the run's tokens, kFp8Batch loads in flight:
// it folds their |values| into one maximum a vector, then one shared atomic (an atomic a
// vector had 16-32 lanes on one address). The page's scales are set as the scale kernel sets
// them, the page's earlier tokens re-quantised where a scale grew, and the run's vectors loaded
// again (from L2, read a moment before) and stored quantised. Rows shorter than the CTA (small
// heads) take several tokens side by side.
constexpr int kFp8RunThreads = 256;
constexpr int kFp8Batch = 8;

template <typename T>
__global__ void __launch_bounds__(kFp8RunThreads, 3) fp8_cache_runs_kernel(const __grid_constant__ Fp8CacheParams p) {
  constexpr int VEC = 16 / sizeof(T);
  // [2 Hkv] amax (as bits), [2 Hkv] 1 / scale, [2 Hkv] old / new; with page bounds [Hkv D] the
  // run's key code minima, [Hkv D] maxima
  extern __shared__ float fp8_sh[];
  unsigned* amax = reinterpret_cast<unsigned*>(fp8_sh);
  const int H = p.num_kv_heads, D = p.head_dim, nvec = D / VEC, per_tok = 2 * H * nvec;
  float* inv = fp8_sh + 2 * H;
  float* ratio = fp8_sh + 4 * H;
  float* klo = fp8_sh + 6 * H;
  float* khi = klo + H * D;
  // token slots side by side (rows shorter than the CTA) and this thread's place
  const int lanes = min(per_tok, kFp8RunThreads), slots = kFp8RunThreads / lanes;
  const int tslot = threadIdx.x / lanes, q0 = threadIdx.x - tslot * lanes;
  const bool active = tslot < slots;
  // vector q of a token: its K/V, head and column, and its source row at token t0
  struct Vec {
    int kv, h, c;
    const T* src;
  };
  const auto vec = [&](int q, int t0) {
    const int kv = q / (H * nvec), hc = q - kv * H * nvec, h = hc / nvec, c = hc - h * nvec;
    return Vec{kv, h, c, fp8_src_row<T>(p, kv, t0, h) + c * VEC};
  };
  for (int r = blockIdx.x; r < p.num_runs; r += gridDim.x) {
    const int t0 = p.runs != nullptr ? p.runs[2 * r] : r, n = p.runs != nullptr ? p.runs[2 * r + 1] : 1;
    const int64_t slot0 = p.slot_mapping[t0];
    if (slot0 < 0) continue;  // a padding token (one token a run): the whole CTA skips it
    const int64_t blk = slot0 / p.block_size;
    const int first = (int)(slot0 - blk * p.block_size);
    for (int j = threadIdx.x; j < 2 * H; j += blockDim.x) amax[j] = 0u;
    for (int j = threadIdx.x; p.meta != nullptr && j < H * D; j += blockDim.x) klo[j] = INFINITY, khi[j] = -INFINITY;
    __syncthreads();
    // the run's vectors of q from token tslot on, kFp8Batch loads in flight: fold(x, t) each
    const auto walk = [&](const Vec& v, auto&& fold) {
      for (int t = tslot; t < n; t += slots * kFp8Batch) {
        uint4 x[kFp8Batch];
#pragma unroll
        for (int b = 0; b < kFp8Batch; ++b)
          if (t + b * slots < n) x[b] = *reinterpret_cast<const uint4*>(v.src + (t + b * slots) * p.row_stride[v.kv]);
#pragma unroll
        for (int b = 0; b < kFp8Batch; ++b)
          if (t + b * slots < n) fold(x[b], t + b * slots);
      }
    };
    for (int q = q0; active && q < per_tok; q += lanes) {
      const Vec v = vec(q, t0);
      float mx = 0.f;
      walk(v, [&](const uint4& x, int) { mx = fmaxf(mx, fp8_vec_absmax<T>(x)); });
      atomicMax(amax + v.kv * H + v.h, __float_as_uint(mx));
    }
    __syncthreads();
    for (int j = threadIdx.x; j < 2 * H; j += blockDim.x) {
      ratio[j] = fp8_update_scale(p, blk, j, first, __uint_as_float(amax[j]));
      inv[j] = 1.f / p.scales[blk * 2 * H + j];  // a power of two: exact
    }
    __syncthreads();
    fp8_requant_page(p, blk, first, ratio);
    const int64_t dst_stride = (int64_t)H * p.head_dim;  // bytes from one slot to the next
    for (int q = q0; active && q < per_tok; q += lanes) {
      const Vec v = vec(q, t0);
      const float f = inv[v.kv * H + v.h];
      uint8_t* dst = p.cache[v.kv] + ((blk * p.block_size + first) * H + v.h) * (int64_t)p.head_dim + v.c * VEC;
      if (v.kv == 0 && p.meta != nullptr) {  // keys: their codes' min / max a channel
        __half2 lo[VEC / 2], hi[VEC / 2];
#pragma unroll
        for (int i = 0; i < VEC / 2; ++i) lo[i] = __float2half2_rn(INFINITY), hi[i] = __float2half2_rn(-INFINITY);
        walk(v, [&](const uint4& x, int t) { fp8_store_vec<T>(x, f, dst + t * dst_stride, lo, hi); });
        float* l = klo + v.h * D + v.c * VEC;
        float* u = khi + v.h * D + v.c * VEC;
#pragma unroll
        for (int i = 0; i < VEC / 2; ++i) {
          atomic_min_float(l + 2 * i, __low2float(lo[i]));
          atomic_min_float(l + 2 * i + 1, __high2float(lo[i]));
          atomic_max_float(u + 2 * i, __low2float(hi[i]));
          atomic_max_float(u + 2 * i + 1, __high2float(hi[i]));
        }
      } else {
        walk(v, [&](const uint4& x, int t) { fp8_store_vec<T>(x, f, dst + t * dst_stride); });
      }
    }
    if (p.meta != nullptr) {
      __syncthreads();
      // the run's bounds, merged with the page's old ones (re-quantised where the K scale grew)
      // when the run continues the page; 4 channels a thread
      for (int w = threadIdx.x; w < H * D / 4; w += blockDim.x) {
        const int h = 4 * w / D;
        const float f = ratio[h];  // entry (K, h)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          uint32_t* m = reinterpret_cast<uint32_t*>(p.meta + blk * 2 * H * D + r * H * D) + w;
          float x[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) x[i] = (r ? khi : klo)[4 * w + i];
          if (first > 0) {
            const uint32_t old = f == 1.f ? *m : fp8_requant4(*m, f);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const float o = e4m3_to_float((old >> (8 * i)) & 0xff);
              x[i] = r ? fmaxf(x[i], o) : fminf(x[i], o);
            }
          }
          *m = float2_to_e4m3x2(x[0], x[1]) | (float2_to_e4m3x2(x[2], x[3]) << 16);
        }
      }
    }
    __syncthreads();  // the shared arrays are reused by the next run
  }
}

}  // namespace tinyserve
