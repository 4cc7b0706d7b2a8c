// Compile-check unit for CI: the quantised-key kernels of the twostage selector, without torch.
#include "quant_keys.cuh"

namespace tinyserve {
#define QUANT(T, BITS)                                                                      \
  template __global__ void quantize_keys_kernel<T, BITS>(const __grid_constant__ QuantKeysParams); \
  template __global__ void page_estimates_kernel<T, BITS>(const __grid_constant__ PageEstimateParams);
TINYSERVE_QUANT_INSTANCES(QUANT)
#define COPY_SCORES(T, D) \
  template __global__ void page_scores_copy_kernel<T, D>(const __grid_constant__ PageScoresCopyParams);
TINYSERVE_BOUND_COPY_INSTANCES(COPY_SCORES)
}  // namespace tinyserve
