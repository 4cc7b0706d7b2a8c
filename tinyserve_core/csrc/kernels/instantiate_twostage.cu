// Compile-check unit for CI: the twostage selector's fused estimate and selection kernels, without torch.
#include "estimate_lse.cuh"
#include "estimate_lse_mma.cuh"
#include "twostage_select.cuh"

namespace tinyserve {
#define LSE(T, BITS, D, G) \
  template __global__ void estimate_lse_kernel<T, BITS, D, G>(const __grid_constant__ PageEstimateParams, int);
TINYSERVE_LSE_INSTANCES(LSE)
#define LSE_MMA(T, BITS, D, G) \
  template __global__ void estimate_lse_mma_kernel<T, BITS, D, G>(const __grid_constant__ PageEstimateParams, int);
TINYSERVE_LSE_INSTANCES(LSE_MMA)
template __global__ void twostage_select_kernel<1>(const __grid_constant__ TwoStageSelectParams);
template __global__ void twostage_select_kernel<2>(const __grid_constant__ TwoStageSelectParams);
}  // namespace tinyserve
