// copy_blocks: copy-on-write of whole blocks. One launch covers every (src, dst) pair in
// every layer's K, V and metadata: the tensors travel as a pointer table in the kernel's
// parameter space (__grid_constant__), the grid is (pair, tensor).
#pragma once

#include "common.cuh"

namespace tinyserve {

constexpr int kCopyMaxTensors = 384;  // 128 layers x (K, V, meta); more go in further launches

struct CopyBlocksParams {
  char* base[kCopyMaxTensors];
  int64_t block_bytes[kCopyMaxTensors];  // a multiple of 16
  const int64_t* mapping;                // [N, 2] (src, dst)
  int num_pairs;
};

__global__ void __launch_bounds__(256) copy_blocks_kernel(const __grid_constant__ CopyBlocksParams p) {
  const int pair = blockIdx.x, t = blockIdx.y;
  const int64_t src = p.mapping[2 * pair], dst = p.mapping[2 * pair + 1];
  const int64_t nb = p.block_bytes[t];
  const uint4* s = reinterpret_cast<const uint4*>(p.base[t] + src * nb);
  uint4* d = reinterpret_cast<uint4*>(p.base[t] + dst * nb);
  const int n = (int)(nb / 16);
  constexpr int U = 4;  // vectors in flight per thread
  for (int i = threadIdx.x; i < n; i += U * blockDim.x) {
    uint4 r[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = i + u * blockDim.x;
      if (k < n) r[u] = ld_stream(s + k);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = i + u * blockDim.x;
      if (k < n) d[k] = r[u];
    }
  }
}

}  // namespace tinyserve
