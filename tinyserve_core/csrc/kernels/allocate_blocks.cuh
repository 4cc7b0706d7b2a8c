// allocate_blocks: hand out the `num` lowest-numbered free blocks (refcount 0) in one
// device-wide pass, race-free without atomics: a block's position in the answer is its
// rank among free blocks, an exclusive scan over free flags.
//   1. alloc_count_kernel:  free blocks per chunk of kAllocChunk ids
//   2. alloc_scan_kernel:   exclusive scan of the chunk counts (one CTA) and the total
//   3. alloc_assign_kernel: per chunk, a block-wide scan gives each free id its rank;
//      rank < num -> out[rank] = id, refcount = 1. Entries past the free count get -1.
#pragma once

#include "common.cuh"

namespace tinyserve {

constexpr int kAllocThreads = 256;
constexpr int kAllocPerThread = 16;
constexpr int kAllocChunk = kAllocThreads * kAllocPerThread;

struct AllocParams {
  int* refcounts;     // [num_blocks]
  int* chunk_offset;  // [num_chunks + 1]: counts, then exclusive offsets; last = total free
  int* out;           // [num]
  int num_blocks, num_chunks, num;
};

__device__ __forceinline__ int alloc_load_free(const AllocParams& p, int first, int (&f)[kAllocPerThread]) {
  int n = 0;
#pragma unroll
  for (int i = 0; i < kAllocPerThread; ++i) {
    const int id = first + i;
    f[i] = id < p.num_blocks && p.refcounts[id] == 0;
    n += f[i];
  }
  return n;
}

__global__ void __launch_bounds__(kAllocThreads) alloc_count_kernel(const __grid_constant__ AllocParams p) {
  int f[kAllocPerThread];
  const int n = alloc_load_free(p, blockIdx.x * kAllocChunk + threadIdx.x * kAllocPerThread, f);
  int total;
  block_exclusive_scan<kAllocThreads>(n, &total);
  if (threadIdx.x == 0) p.chunk_offset[blockIdx.x] = total;
}

__global__ void __launch_bounds__(1024) alloc_scan_kernel(const __grid_constant__ AllocParams p) {
  int carry = 0;  // the running total, the same in every thread
  for (int base = 0; base < p.num_chunks; base += 1024) {
    const int i = base + threadIdx.x;
    int total;
    const int excl = block_exclusive_scan<1024>(i < p.num_chunks ? p.chunk_offset[i] : 0, &total);
    if (i < p.num_chunks) p.chunk_offset[i] = carry + excl;
    carry += total;
  }
  if (threadIdx.x == 0) p.chunk_offset[p.num_chunks] = carry;
}

__global__ void __launch_bounds__(kAllocThreads) alloc_assign_kernel(const __grid_constant__ AllocParams p) {
  const int chunk_base = p.chunk_offset[blockIdx.x];
  if (chunk_base < p.num) {
    int f[kAllocPerThread];
    const int first = blockIdx.x * kAllocChunk + threadIdx.x * kAllocPerThread;
    const int n = alloc_load_free(p, first, f);
    int total;
    int rank = chunk_base + block_exclusive_scan<kAllocThreads>(n, &total);
#pragma unroll
    for (int i = 0; i < kAllocPerThread; ++i) {
      if (f[i]) {
        if (rank < p.num) {
          p.out[rank] = first + i;
          p.refcounts[first + i] = 1;
        }
        ++rank;
      }
    }
  }
  const int free_total = p.chunk_offset[p.num_chunks];
  for (int i = free_total + blockIdx.x * kAllocThreads + threadIdx.x; i < p.num;
       i += gridDim.x * kAllocThreads)
    p.out[i] = -1;
}

}  // namespace tinyserve
