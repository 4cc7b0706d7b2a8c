// Shared device helpers for the TinyServe kernels. Pure CUDA: no torch headers, so CI can
// compile-check every kernel with nvcc alone.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace tinyserve {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Two floats packed into one 32-bit register of 16-bit values (low half = first), the
// operand format of the tensor-core instructions.
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// K/V are read exactly once per kernel: stream them past L1 so the block tables and
// queries keep their cache lines.
// Eight consecutive elements (16-byte aligned) as floats.
template <typename T>
__device__ __forceinline__ void load8(const T* src, float (&f)[8]) {
  if constexpr (sizeof(T) == 4) {
    const float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  } else {
    const uint4 u = *reinterpret_cast<const uint4*>(src);
    T v[8];
    memcpy(v, &u, 16);
#pragma unroll
    for (int e = 0; e < 8; ++e) f[e] = to_float(v[e]);
  }
}

__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// Asynchronous 16-byte global->shared copy through L2 only (cp.async.cg); src_bytes = 0
// reads nothing and writes zeros. l2_256: with the L2::256B prefetch hint, which makes the
// first 16-byte copy of a 256-byte K/V row one full-row DRAM request. It is a per-device
// choice (csrc/tuning.json `decode_l2_prefetch`): on an H200 the decode K/V stream ran 7%
// slower with it (64 x 32K: 2,034 vs 1,896 us, 100% vs 108% of the copy bandwidth).
__device__ __forceinline__ void cp_async16_s(uint32_t smem, const void* gmem, int src_bytes, bool l2_256) {
  if (l2_256)
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;" ::"r"(smem), "l"(gmem), "r"(src_bytes)
                 : "memory");
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem), "l"(gmem), "r"(src_bytes)
                 : "memory");
}
// Asynchronous 4-byte global->shared copy (4- and 8-byte copies exist only as cp.async.ca);
// src_bytes = 0 writes zeros.
__device__ __forceinline__ void cp_async4(uint32_t smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(smem), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Wait until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Four 8x8 16-bit matrices from shared memory into MMA fragment order; lanes 8i..8i+7
// give the row addresses of matrix i. _trans delivers each matrix transposed.
__device__ __forceinline__ void ldmatrix_x4(uint32_t& a0, uint32_t& a1, uint32_t& a2, uint32_t& a3, uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(a0), "=r"(a1), "=r"(a2), "=r"(a3)
               : "r"(smem)
               : "memory");
}
// Two 8x8 16-bit matrices (lanes 0..7 and 8..15 give the row addresses).
__device__ __forceinline__ void ldmatrix_x2(uint32_t& a0, uint32_t& a1, uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(a0), "=r"(a1) : "r"(smem) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& a0, uint32_t& a1, uint32_t& a2, uint32_t& a3,
                                                  uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(a0), "=r"(a1), "=r"(a2), "=r"(a3)
               : "r"(smem)
               : "memory");
}

__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}

// D(16x8 f32) += A(16x16) * B(16x8), 16-bit inputs, fp32 accumulation.
// The two specialisations differ only in the PTX type of A and B; an asm template must
// be a string literal, so a macro pastes the type in rather than a template parameter.
template <typename T> struct Mma;
#define TINYSERVE_MMA_M16N8K16(T, AB)                                                                  \
  template <> struct Mma<T> {                                                                          \
    __device__ __forceinline__ static void run(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,   \
                                               uint32_t a3, uint32_t b0, uint32_t b1) {                \
      asm volatile(                                                                                    \
          "mma.sync.aligned.m16n8k16.row.col.f32." AB "." AB ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "     \
          "{%8,%9}, {%0,%1,%2,%3};"                                                                    \
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                             \
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));                                     \
    }                                                                                                  \
  };
TINYSERVE_MMA_M16N8K16(__half, "f16")
TINYSERVE_MMA_M16N8K16(__nv_bfloat16, "bf16")
#undef TINYSERVE_MMA_M16N8K16

// The (element type, head_dim) pairs the bound-scoring kernels are built for.
#define TINYSERVE_DTYPE_HEAD_DIMS(X) \
  X(float, 64)                       \
  X(float, 128)                      \
  X(__half, 64)                      \
  X(__half, 128)                     \
  X(__nv_bfloat16, 64)               \
  X(__nv_bfloat16, 128)

__host__ __device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Inclusive prefix sum over the lanes of a warp.
__device__ __forceinline__ int warp_inclusive_scan(int x) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  return x;
}

// Exclusive prefix sum of x over the THREADS threads of the block in thread order; *total
// gets the sum. Every thread of the block must call it (it holds barriers).
template <int THREADS>
__device__ __forceinline__ int block_exclusive_scan(int x, int* total) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps, one block");
  constexpr int W = THREADS / 32;
  __shared__ int warp_sums[W];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int inc = warp_inclusive_scan(x);
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    const int w = warp_inclusive_scan(lane < W ? warp_sums[lane] : 0);
    if (lane < W) warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const int before = warp == 0 ? 0 : warp_sums[warp - 1];
  *total = warp_sums[W - 1];
  __syncthreads();  // warp_sums is reused by the next call
  return before + inc - x;
}

// Programmatic dependent launch (sm_90+): a kernel launched with it may be scheduled while
// the previous kernel in the stream is still draining; it waits here, before its first
// global access, until that kernel has finished and its writes are visible. Without the
// launch attribute (or before sm_90) this is a no-op.
__device__ __forceinline__ void wait_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next PDL-launched kernel be scheduled once every CTA of this grid has called it
// (it still waits for this grid's completion in wait_prior_grid): called right after the
// wait, so the next grid's launch overlaps this kernel's whole run, not only its tail.
// Every CTA of this grid is resident or done by then, so the waiting CTAs of the next grid
// cannot keep one of ours from being scheduled.
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// Both, at the entry of a kernel launched with launch_pdl (csrc/launch.h).
__device__ __forceinline__ void pdl_entry() {
  wait_prior_grid();
  allow_dependents();
}

}  // namespace tinyserve
