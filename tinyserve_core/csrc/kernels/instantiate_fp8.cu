// Compile-check unit for CI: the FP8 KV-cache kernels, without torch.
#include "cache_fp8.cuh"
#include "page_scores_fp8.cuh"
#include "paged_attention_fp8.cuh"

namespace tinyserve {
#define FP8_DECODE(D)                                                                      \
  template __global__ void paged_decode_fp8_kernel<D, false>(const __grid_constant__ Fp8DecodeParams); \
  template __global__ void paged_decode_fp8_kernel<D, true>(const __grid_constant__ Fp8DecodeParams);
TINYSERVE_FP8_DECODE_INSTANCES(FP8_DECODE)
template __global__ void page_scores_fp8_kernel<64>(const __grid_constant__ PageScoreParams);
template __global__ void page_scores_fp8_kernel<128>(const __grid_constant__ PageScoreParams);
#define FP8_CACHE(T)                                                                          \
  template __global__ void fp8_cache_amax_kernel<T>(const __grid_constant__ Fp8CacheParams);   \
  template __global__ void fp8_cache_write_kernel<T>(const __grid_constant__ Fp8CacheParams);  \
  template __global__ void fp8_cache_runs_kernel<T>(const __grid_constant__ Fp8CacheParams);
TINYSERVE_CACHE_INSTANCES(FP8_CACHE)  // the scale and meta kernels are no templates: the header defines them
}  // namespace tinyserve
