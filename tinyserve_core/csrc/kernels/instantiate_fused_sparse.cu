// Compile-check unit for CI (sm_90a only: the fused kernel uses thread-block clusters):
// every instance of the fused sparse decode kernel, without torch.
#include "fused_sparse.cuh"

namespace tinyserve {
#define FUSED(T, D) \
  template __global__ void fused_sparse_decode_kernel<T, D>(const __grid_constant__ FusedSparseParams);
TINYSERVE_FUSED_INSTANCES(FUSED)
}  // namespace tinyserve
