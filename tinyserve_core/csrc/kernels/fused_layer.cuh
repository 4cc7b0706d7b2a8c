// Fused elementwise steps of a decoder layer (kernels/fused_reference.py is the spec):
// RMSNorm with the residual add before it, rotate-half RoPE of q and k in place, and
// SiLU-and-mul. Each replaces 5-10 torch launches. They round to the storage type T
// exactly where the unfused torch math rounds (every fp16/bf16 intermediate torch keeps),
// so a fused model matches the unfused one up to the float32 sum order of the norm.
// Pure CUDA: no torch headers (compile-checked with nvcc alone).
#pragma once

#include "common.cuh"

namespace tinyserve {

// What T-typed torch math stores: the float rounded to T and read back.
template <typename T> __device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }

constexpr int kNormThreads = 256;

// Sum over the block (kNormThreads threads), returned to every thread.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[kNormThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float t = lane < kNormThreads / 32 ? warp_sums[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}

// The row in 16-byte vectors held in registers (up to kNormVecs per thread), all loads
// issued before any math: a batch-1 step's norm is one block, and the scalar loop below
// waits one memory latency per element it strides over (16 at hidden 4096: ~7 us a call).
// Returns false (nothing done) when the row does not fit or is not 16-byte aligned.
constexpr int kNormVecs = 4;
template <typename T, bool HAS_DELTA>
__device__ __forceinline__ bool rms_norm_row_vec(const T* xr, const T* dr, const T* weight, T* sumr, T* outr,
                                                 int hidden, float eps) {
  constexpr int VEC = 16 / sizeof(T);
  const int nvec = hidden / VEC;
  auto aligned = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15) == 0; };
  if (hidden % VEC != 0 || nvec > kNormVecs * kNormThreads || !aligned(xr) || !aligned(weight) || !aligned(outr) ||
      (HAS_DELTA && (!aligned(dr) || !aligned(sumr))))
    return false;  // the same for every thread of the block: one row
  uint4 xv[kNormVecs], dv[kNormVecs], wv[kNormVecs];
#pragma unroll
  for (int c = 0; c < kNormVecs; ++c) {
    const int v = threadIdx.x + c * kNormThreads;
    if (v < nvec) {
      xv[c] = reinterpret_cast<const uint4*>(xr)[v];
      if constexpr (HAS_DELTA) dv[c] = reinterpret_cast<const uint4*>(dr)[v];
      wv[c] = reinterpret_cast<const uint4*>(weight)[v];   // needed after the sum: load it now
    }
  }
  float sq = 0.f;
#pragma unroll
  for (int c = 0; c < kNormVecs; ++c) {
    const int v = threadIdx.x + c * kNormThreads;
    if (v < nvec) {
      T* e = reinterpret_cast<T*>(&xv[c]);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        float f = to_float(e[i]);
        if constexpr (HAS_DELTA) {
          f = round_to<T>(f + to_float(reinterpret_cast<const T*>(&dv[c])[i]));
          e[i] = from_float<T>(f);
        }
        sq += f * f;
      }
      if constexpr (HAS_DELTA) reinterpret_cast<uint4*>(sumr)[v] = xv[c];
    }
  }
  const float r = rsqrtf(block_sum(sq) / hidden + eps);
#pragma unroll
  for (int c = 0; c < kNormVecs; ++c) {
    const int v = threadIdx.x + c * kNormThreads;
    if (v < nvec) {
      uint4 o;
      const T* e = reinterpret_cast<const T*>(&xv[c]);
      const T* w = reinterpret_cast<const T*>(&wv[c]);
      T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
      for (int i = 0; i < VEC; ++i) oe[i] = from_float<T>(to_float(w[i]) * round_to<T>(to_float(e[i]) * r));
      reinterpret_cast<uint4*>(outr)[v] = o;
    }
  }
  return true;
}

// One block per row. HAS_DELTA: sum = x + delta (rounded to T, stored to `sum`), then the
// norm of the sum; else the norm of x. out = w * T(s * rsqrt(mean(s^2) + eps)).
template <typename T, bool HAS_DELTA>
__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(const T* __restrict__ x, int64_t x_stride, const T* __restrict__ delta, int64_t delta_stride,
                    const T* __restrict__ weight, T* __restrict__ sum, T* __restrict__ out, int hidden, float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * x_stride;
  T* outr = out + row * hidden;
  T* sumr = HAS_DELTA ? sum + row * hidden : nullptr;
  const T* dr = HAS_DELTA ? delta + row * delta_stride : nullptr;
  pdl_entry();
  if (rms_norm_row_vec<T, HAS_DELTA>(xr, dr, weight, sumr, outr, hidden, eps)) return;
  float sq = 0.f;
  for (int i = threadIdx.x; i < hidden; i += kNormThreads) {
    float s = to_float(xr[i]);
    if constexpr (HAS_DELTA) {
      s = round_to<T>(s + to_float(delta[row * delta_stride + i]));
      sumr[i] = from_float<T>(s);
    }
    sq += s * s;
  }
  const float r = rsqrtf(block_sum(sq) / hidden + eps);
  // each thread re-reads only the elements it wrote itself: no barrier needed
  const T* src = HAS_DELTA ? sumr : xr;
  for (int i = threadIdx.x; i < hidden; i += kNormThreads) {
    const float h = round_to<T>(to_float(src[i]) * r);
    outr[i] = from_float<T>(to_float(weight[i]) * h);
  }
}

// The cos and sin of a token's head_dim / 2 angles float(pos) * inv_freq[i], rounded to T,
// into shared memory, once per token rather than once per head: cosf/sinf of angles up to
// ~1e5 rad cost ~40 instructions each, and a token's heads (40 in a GQA 32/8 layer) share
// the same angles. Every thread of the block must call it (a barrier).
constexpr int kRopeMaxPairs = 256;   // head_dim up to 512 takes the table
template <typename T>
__device__ __forceinline__ void rope_table(float* cs, float* sn, float pos, const float* inv_freq, int half) {
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = pos * inv_freq[i];
    cs[i] = round_to<T>(cosf(angle));
    sn[i] = round_to<T>(sinf(angle));
  }
  __syncthreads();
}

// Grid (tokens); threads over (heads of q then k) x half pairs. x [N, H, D] with row
// stride `*_stride` and head stride D. The angle of pair i at position p is
// float(p) * inv_freq[i] (float32, as torch computes it), its cos and sin rounded to T
// (the cos/sin tables torch would build and cast), so no table is built per step.
template <typename T>
__global__ void rotary_kernel(T* __restrict__ q, int64_t q_stride, int q_heads, T* __restrict__ k, int64_t k_stride,
                              int k_heads, const int64_t* __restrict__ positions, const float* __restrict__ inv_freq,
                              int head_dim) {
  pdl_entry();
  const int64_t n = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = (float)positions[n];
  __shared__ float cs[kRopeMaxPairs], sn[kRopeMaxPairs];
  const bool table = half <= kRopeMaxPairs;   // the same for the whole block
  if (table) rope_table<T>(cs, sn, pos, inv_freq, half);
  const int pairs = (q_heads + k_heads) * half;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int h = p / half, i = p % half;
    T* xr = h < q_heads ? q + n * q_stride + h * head_dim : k + n * k_stride + (h - q_heads) * head_dim;
    const float angle = table ? 0.f : pos * inv_freq[i];
    const float c = table ? cs[i] : round_to<T>(cosf(angle)), s = table ? sn[i] : round_to<T>(sinf(angle));
    const float x1 = to_float(xr[i]), x2 = to_float(xr[i + half]);
    // torch: x * cos + cat(-x2, x1) * sin, each product and the sum rounded to T
    xr[i] = from_float<T>(round_to<T>(x1 * c) + round_to<T>(-x2 * s));
    xr[i + half] = from_float<T>(round_to<T>(x2 * c) + round_to<T>(x1 * s));
  }
}

// out [N, I] = silu(gate) * up for gate_up [N, 2I] (row stride `stride`); grid (N, ceil(I / threads)).
template <typename T>
__global__ void silu_and_mul_kernel(const T* __restrict__ gate_up, int64_t stride, T* __restrict__ out, int inter) {
  pdl_entry();
  const int64_t n = blockIdx.x;
  const int i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i >= inter) return;
  const float g = to_float(gate_up[n * stride + i]);
  const float u = to_float(gate_up[n * stride + inter + i]);
  const float act = round_to<T>(g / (1.f + expf(-g)));
  out[n * inter + i] = from_float<T>(act * u);
}

#define TINYSERVE_FUSED_INSTANCES(X) \
  X(float)                           \
  X(__half)                          \
  X(__nv_bfloat16)

}  // namespace tinyserve
