// Compile-check unit for CI: the FP8 KV-cache kernels, without torch.
#include "cache_fp8.cuh"
#include "paged_attention_fp8.cuh"

namespace tinyserve {
#define FP8_DECODE(D) template __global__ void paged_decode_fp8_kernel<D>(const __grid_constant__ Fp8DecodeParams);
TINYSERVE_FP8_DECODE_INSTANCES(FP8_DECODE)
#define FP8_CACHE(T)                                                                          \
  template __global__ void fp8_cache_amax_kernel<T>(const __grid_constant__ Fp8CacheParams);   \
  template __global__ void fp8_cache_write_kernel<T>(const __grid_constant__ Fp8CacheParams);  \
  template __global__ void fp8_cache_runs_kernel<T>(const __grid_constant__ Fp8CacheParams);
TINYSERVE_CACHE_INSTANCES(FP8_CACHE)  // fp8_cache_scale_kernel is no template: the header defines it
}  // namespace tinyserve
