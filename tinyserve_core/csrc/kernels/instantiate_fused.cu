// Compile-check unit for CI: the fused decoder-layer kernels, without torch.
#include "fused_layer.cuh"

namespace tinyserve {
#define FUSED(T)                                                                                          \
  template __global__ void rms_norm_kernel<T, true>(const T*, int64_t, const T*, int64_t, const T*, T*, T*, \
                                                    int, float);                                          \
  template __global__ void rms_norm_kernel<T, false>(const T*, int64_t, const T*, int64_t, const T*, T*, T*, \
                                                     int, float);                                         \
  template __global__ void rotary_kernel<T>(T*, int64_t, int, T*, int64_t, int, const int64_t*, const float*, int);  \
  template __global__ void silu_and_mul_kernel<T>(const T*, int64_t, T*, int);
TINYSERVE_FUSED_INSTANCES(FUSED)
}  // namespace tinyserve

#include "skinny_gemm.cuh"

namespace tinyserve {
#define SKINNY(T, M) \
  template __global__ void skinny_gemm_kernel<T, M>(const T*, const T*, const T*, T*, int, int, bool);
TINYSERVE_SKINNY_INSTANCES(SKINNY)
}  // namespace tinyserve
