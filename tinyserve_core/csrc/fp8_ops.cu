// Glue for reshape_and_cache into an FP8 (e4m3) cache (kernels/cache_fp8.cuh). Decode
// attention over such a cache is paged_decode_attention's FP8 path (attention_ops.cu).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernels/cache_fp8.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {

void reshape_and_cache_fp8(const torch::Tensor& key, const torch::Tensor& value, torch::Tensor& k_cache,
                           torch::Tensor& v_cache, torch::Tensor& kv_scales, const torch::Tensor& slot_mapping,
                           bool one_per_page, const std::optional<torch::Tensor>& runs) {
  TS_CHECK_CUDA(key);
  TS_CHECK_CUDA(k_cache);
  TS_CHECK_CONTIG(k_cache);
  TS_CHECK_CONTIG(v_cache);
  TS_CHECK_CONTIG(kv_scales);
  TS_CHECK_CONTIG(slot_mapping);
  TORCH_CHECK(k_cache.scalar_type() == at::kFloat8_e4m3fn && v_cache.scalar_type() == at::kFloat8_e4m3fn,
              "reshape_and_cache_fp8: the caches must be float8_e4m3fn");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes(), "caches must be [NB,BS,Hkv,D]");
  TORCH_CHECK(key.dim() == 3 && key.sizes() == value.sizes() && key.scalar_type() == value.scalar_type(),
              "key/value must be [T,Hkv,D] of one dtype");
  TORCH_CHECK(slot_mapping.scalar_type() == torch::kInt64, "slot_mapping must be int64");
  const int T = key.size(0), NB = k_cache.size(0), BS = k_cache.size(1), Hkv = k_cache.size(2), D = k_cache.size(3);
  TORCH_CHECK(key.size(1) == Hkv && key.size(2) == D && slot_mapping.size(0) == T, "shapes disagree");
  TORCH_CHECK(kv_scales.scalar_type() == torch::kFloat32 && kv_scales.dim() == 3 && kv_scales.size(0) == NB &&
                  kv_scales.size(1) == 2 && kv_scales.size(2) == Hkv, "kv_scales must be float32 [NB, 2, Hkv]");
  TORCH_CHECK(D % 16 == 0, "head_dim must be a multiple of 16");
  const int vec = 16 / key.element_size();
  Fp8CacheParams p{};
  for (int j = 0; j < 2; ++j) {  // K, then V
    const torch::Tensor& x = j ? value : key;
    TORCH_CHECK(x.stride(2) == 1 && x.stride(0) % vec == 0 && x.stride(1) % vec == 0 &&
                    reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0,
                "key/value rows must be 16-byte aligned with a contiguous head_dim");
    p.src[j] = x.data_ptr();
    p.row_stride[j] = x.stride(0);
    p.head_stride[j] = x.stride(1);
    p.cache[j] = static_cast<uint8_t*>((j ? v_cache : k_cache).data_ptr());
  }
  if (T == 0) return;
  const c10::cuda::CUDAGuard guard(key.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  p.scales = kv_scales.data_ptr<float>();
  p.slot_mapping = slot_mapping.data_ptr<int64_t>();
  p.num_tokens = T;
  p.num_kv_heads = Hkv;
  p.head_dim = D;
  p.block_size = BS;
  p.num_blocks = NB;
  TORCH_CHECK(!(one_per_page && runs.has_value()), "reshape_and_cache_fp8: one_per_page or runs, not both");
  if (one_per_page || runs.has_value()) {  // the caller's page runs (or one token a page): one launch, no scratch
    p.num_runs = T;
    if (runs.has_value()) {
      p.runs = checked_page_runs(*runs, p.num_runs);
      if (p.num_runs == 0) return;
    }
    const int grid = std::min(p.num_runs, 65535 * 8);
    const size_t smem = 6 * Hkv * sizeof(float);
    for_element_type(key, "reshape_and_cache_fp8", [&](auto tag) {
      fp8_cache_runs_kernel<decltype(tag)><<<grid, kFp8RunThreads, smem, stream>>>(p);
    });
    return;
  }
  const int64_t zeroed = (int64_t)NB * (1 + 2 * Hkv) + 1;  // lowest offsets, amax, list count
  auto scratch = torch::empty({zeroed + T}, slot_mapping.options().dtype(torch::kInt32));
  TS_CUDA_CHECK(cudaMemsetAsync(scratch.data_ptr(), 0, zeroed * 4, stream));
  p.scratch = scratch.data_ptr<int>();
  const int threads = 256;
  const int amax_blocks = (int)std::min<int64_t>(((int64_t)T * Hkv * 32 + threads - 1) / threads, 65535LL * 8);
  const int64_t vectors = (int64_t)T * 2 * Hkv * D / vec;
  const int write_blocks = (int)std::min<int64_t>((vectors + threads - 1) / threads, 65535LL * 8);
  const int scale_blocks = std::min(T, NB);
  // the three launches for the CUDA element type of key/value (`tag`)
  for_element_type(key, "reshape_and_cache_fp8", [&](auto tag) {
    using CT = decltype(tag);
    fp8_cache_amax_kernel<CT><<<amax_blocks, threads, 0, stream>>>(p);
    TS_LAUNCH_CHECK();
    fp8_cache_scale_kernel<<<scale_blocks, threads, 2 * Hkv * sizeof(float), stream>>>(p);
    TS_LAUNCH_CHECK();
    fp8_cache_write_kernel<CT><<<write_blocks, threads, 0, stream>>>(p);
  });
}

}  // namespace tinyserve
