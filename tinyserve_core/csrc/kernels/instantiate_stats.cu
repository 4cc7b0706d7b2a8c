// Compile-check unit for CI: the selection-statistics kernel, without torch.
#include "selection_stats.cuh"

namespace tinyserve {
#define STATS(T, D, G) \
  template __global__ void selection_stats_kernel<T, D, G>(const __grid_constant__ SelectionStatsParams);
TINYSERVE_STATS_INSTANCES(STATS)
}  // namespace tinyserve
