// Glue for reshape_and_cache and copy_blocks.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "kernels/copy_blocks.cuh"
#include "kernels/reshape_and_cache.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {

void reshape_and_cache(const torch::Tensor& key, const torch::Tensor& value, torch::Tensor& k_cache,
                       torch::Tensor& v_cache, const std::optional<torch::Tensor>& meta,
                       const torch::Tensor& slot_mapping, bool one_per_page,
                       const std::optional<torch::Tensor>& runs) {
  TS_CHECK_CUDA(key);
  TS_CHECK_CUDA(k_cache);
  TS_CHECK_CONTIG(k_cache);
  TS_CHECK_CONTIG(v_cache);
  TS_CHECK_CONTIG(slot_mapping);
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes(), "caches must be [NB,BS,Hkv,D]");
  TORCH_CHECK(key.dim() == 3 && key.sizes() == value.sizes(), "key/value must be [T,Hkv,D]");
  TORCH_CHECK(key.scalar_type() == k_cache.scalar_type() && value.scalar_type() == v_cache.scalar_type(),
              "key/value dtype must match the cache");
  TORCH_CHECK(slot_mapping.scalar_type() == torch::kInt64, "slot_mapping must be int64");
  const int T = key.size(0), Hkv = k_cache.size(2), D = k_cache.size(3), BS = k_cache.size(1);
  TORCH_CHECK(key.size(1) == Hkv && key.size(2) == D && slot_mapping.size(0) == T, "shapes disagree");
  const int64_t esz = key.element_size();
  const int vec = 16 / esz;
  TORCH_CHECK(D % vec == 0, "head_dim must be a multiple of ", vec);
  for (const auto* t : {&key, &value}) {
    TORCH_CHECK(t->stride(2) == 1 && t->stride(0) % vec == 0 && t->stride(1) % vec == 0 &&
                    reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0,
                "key/value rows must be 16-byte aligned with a contiguous head_dim");
  }
  if (T == 0) return;
  const c10::cuda::CUDAGuard guard(key.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  CacheWriteParams p{};
  p.key = key.data_ptr();
  p.value = value.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.slot_mapping = slot_mapping.data_ptr<int64_t>();
  p.key_stride = key.stride(0);
  p.key_head_stride = key.stride(1);
  p.value_stride = value.stride(0);
  p.value_head_stride = value.stride(1);
  p.num_tokens = T;
  p.num_kv_heads = Hkv;
  p.head_dim = D;
  p.block_size = BS;
  p.num_blocks = (int)k_cache.size(0);
  torch::Tensor scratch;
  int meta_blocks = 0;
  if (meta.has_value()) {
    const auto& m = *meta;
    TS_CHECK_CONTIG(m);
    TORCH_CHECK(m.scalar_type() == k_cache.scalar_type(), "meta must have the cache dtype");
    TORCH_CHECK(m.dim() == 4 && m.size(0) == k_cache.size(0) && m.size(1) == 2 && m.size(2) == Hkv &&
                    m.size(3) == D, "meta must be [NB, 2, Hkv, D]");
    TORCH_CHECK(k_cache.size(0) < (1LL << 30), "reshape_and_cache: too many blocks");
    p.meta = m.data_ptr();
    TORCH_CHECK(!(one_per_page && runs.has_value()), "reshape_and_cache: one_per_page or runs, not both");
    if (runs.has_value()) {   // the caller's page runs: one CTA per run, no scratch
      p.runs = checked_page_runs(*runs, p.num_runs);
      if (p.num_runs == 0) return;
      const int grid = std::min(p.num_runs, 65535);
      for_element_type(key, "reshape_and_cache", [&](auto tag) {
        launch_pdl(cache_write_runs_meta_kernel<decltype(tag)>, dim3(grid), dim3(kCacheMetaThreads), 0, stream, p);
      });
      return;
    }
    if (one_per_page) {   // no two tokens in one page: one CTA per token, no scratch
      const int threads = std::min(256, (2 * Hkv * D / vec + 31) / 32 * 32);
      for_element_type(key, "reshape_and_cache", [&](auto tag) {
        launch_pdl(cache_write_token_meta_kernel<decltype(tag)>, dim3(T), dim3(threads), 0, stream, p);
      });
      return;
    }
    const int64_t head = 2 + 2 * k_cache.size(0);  // counters and per-block state; the list is not read past its count
    scratch = torch::empty({head + T}, slot_mapping.options().dtype(torch::kInt32));
    TS_CUDA_CHECK(cudaMemsetAsync(scratch.data_ptr(), 0, head * 4, stream));
    p.scratch = scratch.data_ptr<int>();
    // Chunks of consecutive tokens, a power of two up to the block size, small enough for
    // a full grid (a 256-sequence decode write gets one token per chunk). Chunks of a whole
    // page go to a persistent grid (about kCacheMetaCtasPerSm per SM, taking chunks k,
    // k + grid, ...). Smaller chunks get a CTA each: runs start only in some of them, and a
    // stride over chunks could hand every run to the same few CTAs.
    const int full = kCacheMetaCtasPerSm * sm_count();
    int chunk = 1;
    while (chunk * 2 <= BS && (int64_t)chunk * 2 * full <= T) chunk *= 2;
    p.chunk = chunk;
    const int chunks = (T + chunk - 1) / chunk;
    meta_blocks = chunk == BS ? std::min(chunks, full) : chunks;
  }
  const int64_t vectors = (int64_t)T * Hkv * D / vec;
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>((vectors + threads - 1) / threads, 65535LL * 8);
  for_element_type(key, "reshape_and_cache", [&](auto tag) {
    using T = decltype(tag);
    if (p.meta != nullptr)
      launch_pdl(cache_write_meta_kernel<T>, dim3(meta_blocks), dim3(kCacheMetaThreads), 0, stream, p);
    else
      launch_pdl(cache_write_kernel<T>, dim3(blocks), dim3(threads), 0, stream, p);
  });
}

void copy_blocks(const std::vector<torch::Tensor>& tensors, const torch::Tensor& block_mapping) {
  if (tensors.empty() || block_mapping.numel() == 0) return;
  TS_CHECK_CUDA(block_mapping);
  TS_CHECK_CONTIG(block_mapping);
  TORCH_CHECK(block_mapping.scalar_type() == torch::kInt64 && block_mapping.dim() == 2 &&
                  block_mapping.size(1) == 2, "block_mapping must be int64 [N, 2]");
  const c10::cuda::CUDAGuard guard(block_mapping.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int n = block_mapping.size(0);
  for (size_t first = 0; first < tensors.size(); first += kCopyMaxTensors) {
    CopyBlocksParams p{};
    const int count = (int)std::min<size_t>(kCopyMaxTensors, tensors.size() - first);
    for (int i = 0; i < count; ++i) {
      const auto& t = tensors[first + i];
      TS_CHECK_CUDA(t);
      TS_CHECK_CONTIG(t);
      TORCH_CHECK(t.device() == block_mapping.device(), "all tensors must be on one device");
      const int64_t bytes = t.numel() / std::max<int64_t>(1, t.size(0)) * t.element_size();
      TORCH_CHECK(bytes % 16 == 0 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0,
                  "copy_blocks: block rows must be 16-byte aligned");
      p.base[i] = static_cast<char*>(t.data_ptr());
      p.block_bytes[i] = bytes;
    }
    p.mapping = block_mapping.data_ptr<int64_t>();
    p.num_pairs = n;
    copy_blocks_kernel<<<dim3(n, count), 256, 0, stream>>>(p);
    TS_LAUNCH_CHECK();
  }
}

}  // namespace tinyserve
