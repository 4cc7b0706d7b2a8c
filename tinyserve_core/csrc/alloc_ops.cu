// Glue for allocate_blocks.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/allocate_blocks.cuh"
#include "ops.h"

namespace tinyserve {

torch::Tensor allocate_blocks(torch::Tensor& refcounts, int64_t num) {
  TS_CHECK_CUDA(refcounts);
  TS_CHECK_CONTIG(refcounts);
  TORCH_CHECK(refcounts.scalar_type() == torch::kInt32 && refcounts.dim() == 1, "refcounts must be int32 [NB]");
  TORCH_CHECK(num >= 0 && num < (1LL << 31), "num out of range");
  TORCH_CHECK(refcounts.numel() < (1LL << 31) - kAllocChunk, "too many blocks");
  const c10::cuda::CUDAGuard guard(refcounts.device());
  auto out = torch::empty({num}, refcounts.options());
  if (num == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AllocParams p{};
  p.num_blocks = (int)refcounts.numel();
  p.num_chunks = std::max(1, (p.num_blocks + kAllocChunk - 1) / kAllocChunk);
  auto offsets = torch::empty({p.num_chunks + 1}, refcounts.options());
  p.refcounts = refcounts.data_ptr<int>();
  p.chunk_offset = offsets.data_ptr<int>();
  p.out = out.data_ptr<int>();
  p.num = (int)num;
  alloc_count_kernel<<<p.num_chunks, kAllocThreads, 0, stream>>>(p);
  TS_LAUNCH_CHECK();
  alloc_scan_kernel<<<1, 1024, 0, stream>>>(p);
  TS_LAUNCH_CHECK();
  alloc_assign_kernel<<<p.num_chunks, kAllocThreads, 0, stream>>>(p);
  TS_LAUNCH_CHECK();
  return out;
}

}  // namespace tinyserve
