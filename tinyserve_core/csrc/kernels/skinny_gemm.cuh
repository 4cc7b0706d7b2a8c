// y[M, N] = x[M, K] @ w[N, K]^T (+ bias) for a few rows of x (M <= 4: a decode step at
// small batch), the product every linear layer of a decode step is. Its cost is reading
// w once; cuBLAS reaches about 76% of the copy bandwidth there on an H200 (split-K plus a
// reduce kernel). One warp per output column streams that column's weight row with
// 16-byte loads (no L1 allocation: read once), keeps x in L1, accumulates in float32.
// Pure CUDA: no torch headers (compile-checked with nvcc alone).
#pragma once

#include "common.cuh"

namespace tinyserve {

constexpr int kSkinnyWarps = 8;       // output columns per block
constexpr int kSkinnyMaxRows = 4;

template <typename T, int M>
__global__ void __launch_bounds__(kSkinnyWarps * 32)
    skinny_gemm_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                       T* __restrict__ y, int N, int K) {
  pdl_entry();
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kSkinnyWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const uint4* wr = reinterpret_cast<const uint4*>(w + (int64_t)n * K);
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  const int chunks = K / 8;   // 8 values of T per 16 bytes
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
#pragma unroll 4
  for (int c = lane; c < chunks; c += 32) {
    const uint4 wv = ld_stream(wr + c);
    const T* wh = reinterpret_cast<const T*>(&wv);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4 xv = __ldg(xr + m * chunks + c);
      const T* xh = reinterpret_cast<const T*>(&xv);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[m] = fmaf(to_float(wh[j]), to_float(xh[j]), acc[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) y[(int64_t)m * N + n] = from_float<T>(bias != nullptr ? v + to_float(bias[n]) : v);
  }
}

#define TINYSERVE_SKINNY_INSTANCES(X) \
  X(__half, 1)                        \
  X(__half, 2)                        \
  X(__half, 3)                        \
  X(__half, 4)                        \
  X(__nv_bfloat16, 1)                 \
  X(__nv_bfloat16, 2)                 \
  X(__nv_bfloat16, 3)                 \
  X(__nv_bfloat16, 4)

}  // namespace tinyserve
