// Compile-check unit for CI: the selection-statistics kernels, without torch.
#include "selection_stats.cuh"

namespace tinyserve {
#define STATS(T, D, G) \
  template __global__ void stats_pages_kernel<T, D, G>(const __grid_constant__ SelectionStatsParams);
TINYSERVE_STATS_INSTANCES(STATS)
template __global__ void selection_stats_kernel<1>(const __grid_constant__ SelectionStatsParams);
template __global__ void selection_stats_kernel<2>(const __grid_constant__ SelectionStatsParams);
template __global__ void selection_stats_kernel<4>(const __grid_constant__ SelectionStatsParams);
template __global__ void selection_stats_kernel<8>(const __grid_constant__ SelectionStatsParams);
}  // namespace tinyserve
