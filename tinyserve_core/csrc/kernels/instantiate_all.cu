// Compile-check unit for CI: instantiates every kernel the extension launches, without
// torch, so `nvcc -Xptxas -v` reports registers and spills per kernel.
#include "allocate_blocks.cuh"
#include "copy_blocks.cuh"
#include "page_scores.cuh"
#include "page_scores_mma.cuh"
#include "paged_attention.cuh"
#include "reshape_and_cache.cuh"
#include "sparse_decode.cuh"

namespace tinyserve {
#define DECODE(T, D)                                                             \
  template __global__ void paged_decode_kernel<T, D, false, false>(const __grid_constant__ DecodeParams); \
  template __global__ void paged_decode_kernel<T, D, true, false>(const __grid_constant__ DecodeParams); \
  template __global__ void paged_decode_kernel<T, D, false, true>(const __grid_constant__ DecodeParams); \
  template __global__ void paged_decode_kernel<T, D, true, true>(const __grid_constant__ DecodeParams); \
  template __global__ void decode_merge_kernel<T, D>(const __grid_constant__ DecodeParams);
TINYSERVE_DECODE_INSTANCES(DECODE)
#define CACHE(T)                                                                    \
  template __global__ void cache_write_kernel<T>(const __grid_constant__ CacheWriteParams); \
  template __global__ void cache_write_meta_kernel<T>(const __grid_constant__ CacheWriteParams); \
  template __global__ void cache_write_runs_meta_kernel<T>(const __grid_constant__ CacheWriteParams); \
  template __global__ void cache_write_token_meta_kernel<T>(const __grid_constant__ CacheWriteParams);
TINYSERVE_CACHE_INSTANCES(CACHE)
#define SCORE_G(T, D, G) \
  template __global__ void page_scores_kernel<T, D, G>(const __grid_constant__ PageScoreParams);
#define SCORE(T, D) TINYSERVE_SCORE_GROUPS(SCORE_G, T, D)
TINYSERVE_SCORE_INSTANCES(SCORE)
#define SCORE_MMA(T, D) \
  template __global__ void page_scores_mma_kernel<T, D>(const __grid_constant__ PageScoreParams);
TINYSERVE_SCORE_MMA_INSTANCES(SCORE_MMA)
#define SELECT(N) template __global__ void select_pages_kernel<N>(const float*, int, int, int*);
TINYSERVE_SELECT_INSTANCES(SELECT)
#define SPARSE(T, D) \
  template __global__ void sparse_decode_kernel<T, D>(const __grid_constant__ SparseDecodeParams);
TINYSERVE_SPARSE_INSTANCES(SPARSE)
}  // namespace tinyserve
