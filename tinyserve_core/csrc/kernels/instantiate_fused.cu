// Compile-check unit for CI: the fused decoder-layer kernels, without torch.
#include "fused_layer.cuh"

namespace tinyserve {
#define FUSED(T)                                                                                          \
  template __global__ void rms_norm_kernel<T, true>(const T*, int64_t, const T*, int64_t, const T*, T*, T*, \
                                                    int, float);                                          \
  template __global__ void rms_norm_kernel<T, false>(const T*, int64_t, const T*, int64_t, const T*, T*, T*, \
                                                     int, float);                                         \
  template __global__ void rotary_kernel<T>(T*, int64_t, int, T*, int64_t, int, const T*, const T*, int);  \
  template __global__ void silu_and_mul_kernel<T>(const T*, int64_t, T*, int);
TINYSERVE_FUSED_INSTANCES(FUSED)
}  // namespace tinyserve
