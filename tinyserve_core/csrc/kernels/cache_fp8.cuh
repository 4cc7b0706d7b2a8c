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
// Scratch: [NB] block_size - lowest offset written (0: untouched) | [NB, 2, Hkv] amax bits |
// [1] listed pages | [T] the list.
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
  const int64_t* slot_mapping;
  int* scratch;
  int num_tokens, num_kv_heads, head_dim, block_size, num_blocks;
};

// Row (token t, head h) of new K (kv = 0) or V (kv = 1).
template <typename T>
__device__ __forceinline__ const T* fp8_src_row(const Fp8CacheParams& p, int kv, int t, int h) {
  return static_cast<const T*>(p.src[kv]) + t * p.row_stride[kv] + h * p.head_stride[kv];
}

struct Fp8Scratch {
  int* first;         // [NB]
  unsigned* amax;     // [NB, 2, Hkv]
  int* count;
  int* list;
  __device__ explicit Fp8Scratch(const Fp8CacheParams& p)
      : first(p.scratch),
        amax(reinterpret_cast<unsigned*>(p.scratch + p.num_blocks)),
        count(p.scratch + (int64_t)p.num_blocks * (1 + 2 * p.num_kv_heads)),
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
      const uint4 r = *reinterpret_cast<const uint4*>(fp8_src_row<T>(p, is_k ? 0 : 1, t, h) + c * VEC);
      const T* e = reinterpret_cast<const T*>(&r);
      float mx = 0.f;
#pragma unroll
      for (int i = 0; i < VEC; ++i) mx = fmaxf(mx, fabsf(to_float(e[i])));
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
      if (h == 0 && atomicMax(sc.first + blk, p.block_size - off) == 0) sc.list[atomicAdd(sc.count, 1)] = (int)blk;
    }
  }
}

// One CTA per listed page (grid-stride); dynamic shared memory: 2 * Hkv floats.
__global__ void __launch_bounds__(256) fp8_cache_scale_kernel(const __grid_constant__ Fp8CacheParams p) {
  extern __shared__ float ratio[];  // per (K/V, head): old / new scale, 1 = unchanged
  const Fp8Scratch sc(p);
  const int H = p.num_kv_heads, D = p.head_dim, nch = D / 16;
  const int n = *sc.count;
  for (int i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t blk = sc.list[i];
    const int first = p.block_size - sc.first[blk];
    for (int j = threadIdx.x; j < 2 * H; j += blockDim.x) {
      float* s = p.scales + blk * 2 * H + j;
      const float old = *s;
      const float need = fp8_pow2_scale(__uint_as_float(sc.amax[blk * 2 * H + j]));
      const float now = first > 0 ? fmaxf(old, need) : need;
      ratio[j] = first > 0 && now != old ? old / now : 1.f;
      *s = now;
    }
    __syncthreads();
    // the earlier tokens (slots 0..first-1) of the heads whose scale grew, 16 bytes a step
    const int per_slot = 2 * H * nch;
    for (int v = threadIdx.x; v < first * per_slot; v += blockDim.x) {
      const int slot = v / per_slot, r = v - slot * per_slot, j = r / nch, c = r - j * nch;
      const float f = ratio[j];
      if (f == 1.f) continue;
      uint4* ptr = reinterpret_cast<uint4*>(p.cache[j / H] + ((blk * p.block_size + slot) * H + j % H) * D + 16 * c);
      uint4 x = *ptr;
      uint32_t* w = reinterpret_cast<uint32_t*>(&x);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint32_t b = w[q];
        w[q] = float2_to_e4m3x2(e4m3_to_float(b & 0xff) * f, e4m3_to_float((b >> 8) & 0xff) * f) |
               (float2_to_e4m3x2(e4m3_to_float((b >> 16) & 0xff) * f, e4m3_to_float(b >> 24) * f) << 16);
      }
      *ptr = x;
    }
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
    const T* e = reinterpret_cast<const T*>(&x);
    const int64_t blk = slot / p.block_size;
    const float inv = 1.f / p.scales[(blk * 2 + kv) * H + h];  // a power of two: exact
    uint32_t out[VEC / 4];
#pragma unroll
    for (int q = 0; q < VEC / 4; ++q)
      out[q] = float2_to_e4m3x2(to_float(e[4 * q]) * inv, to_float(e[4 * q + 1]) * inv) |
               (float2_to_e4m3x2(to_float(e[4 * q + 2]) * inv, to_float(e[4 * q + 3]) * inv) << 16);
    uint8_t* dst = p.cache[kv] + (slot * H + h) * p.head_dim + c * VEC;
    if constexpr (VEC == 8) *reinterpret_cast<uint2*>(dst) = make_uint2(out[0], out[VEC / 4 - 1]);
    else *reinterpret_cast<uint32_t*>(dst) = out[0];
  }
}

}  // namespace tinyserve
