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
constexpr int kSkinnyAhead = 4;       // 16-byte weight loads a lane issues before the PDL wait

// `weight_first`: the weight and bias are not written by the kernel launched just before
// this one (a model's weights during serving), so each lane issues its first
// kSkinnyAhead weight loads before wait_prior_grid(). Under programmatic dependent launch
// this kernel's CTAs become resident while their predecessor still runs (a norm, the
// attention merge: one to a few hundred CTAs), and at batch 1 the weights are all of
// the product's bytes: their first loads then overlap the predecessor instead of each
// product starting from an idle memory system.
template <typename T, int M>
__global__ void __launch_bounds__(kSkinnyWarps * 32)
    skinny_gemm_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                       T* __restrict__ y, int N, int K, bool weight_first) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kSkinnyWarps + (threadIdx.x >> 5);
  const uint4* wr = reinterpret_cast<const uint4*>(w + (int64_t)(n < N ? n : 0) * K);
  const int chunks = K / 8;   // 8 values of T per 16 bytes
  uint4 ahead[kSkinnyAhead];
  const int first = weight_first ? kSkinnyAhead * 32 : 0;   // chunks taken by the loads ahead
  if (weight_first && n < N) {
#pragma unroll
    for (int a = 0; a < kSkinnyAhead; ++a)
      if (lane + 32 * a < chunks) ahead[a] = ld_stream(wr + lane + 32 * a);
  }
  pdl_entry();
  if (n >= N) return;
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  auto fma_chunk = [&](const uint4& wv, int c) {
    const T* wh = reinterpret_cast<const T*>(&wv);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4 xv = __ldg(xr + m * chunks + c);
      const T* xh = reinterpret_cast<const T*>(&xv);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[m] = fmaf(to_float(wh[j]), to_float(xh[j]), acc[m]);
    }
  };
  if (weight_first) {
#pragma unroll
    for (int a = 0; a < kSkinnyAhead; ++a)
      if (lane + 32 * a < chunks) fma_chunk(ahead[a], lane + 32 * a);
  }
#pragma unroll 4
  for (int c = first + lane; c < chunks; c += 32) fma_chunk(ld_stream(wr + c), c);
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
