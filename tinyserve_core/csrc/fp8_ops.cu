// Glue for reshape_and_cache into an FP8 (e4m3) cache (kernels/cache_fp8.cuh) and page_scores
// over its page bounds (kernels/page_scores_fp8.cuh). Decode attention over such a cache is
// paged_decode_attention's FP8 path (attention_ops.cu).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "attention_params.h"
#include "kernels/cache_fp8.cuh"
#include "kernels/page_scores_fp8.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {

void reshape_and_cache_fp8(const torch::Tensor& key, const torch::Tensor& value, torch::Tensor& k_cache,
                           torch::Tensor& v_cache, torch::Tensor& kv_scales, const torch::Tensor& slot_mapping,
                           bool one_per_page, const std::optional<torch::Tensor>& runs,
                           const std::optional<torch::Tensor>& meta) {
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
  if (meta.has_value()) {
    TS_CHECK_CUDA(*meta);
    TS_CHECK_CONTIG(*meta);
    TORCH_CHECK(meta->device() == k_cache.device() && reinterpret_cast<uintptr_t>(meta->data_ptr()) % 16 == 0,
                "reshape_and_cache_fp8: meta must be 16-byte aligned on the cache's device");
    TORCH_CHECK(meta->scalar_type() == at::kFloat8_e4m3fn && meta->dim() == 4 && meta->size(0) == NB &&
                    meta->size(1) == 2 && meta->size(2) == Hkv && meta->size(3) == D,
                "reshape_and_cache_fp8: meta must be float8_e4m3fn [NB, 2, Hkv, D]");
  }
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
  p.meta = meta.has_value() ? static_cast<uint8_t*>(meta->data_ptr()) : nullptr;
  TORCH_CHECK(!(one_per_page && runs.has_value()), "reshape_and_cache_fp8: one_per_page or runs, not both");
  if (one_per_page || runs.has_value()) {  // the caller's page runs (or one token a page): one launch, no scratch
    p.num_runs = T;
    if (runs.has_value()) {
      p.runs = checked_page_runs(*runs, p.num_runs);
      if (p.num_runs == 0) return;
    }
    const int grid = std::min(p.num_runs, 65535 * 8);
    // the run's key code min / max a channel beside the scales when the cache keeps page bounds
    const size_t smem = (6 * Hkv + (p.meta != nullptr ? 2 * Hkv * D : 0)) * sizeof(float);
    for_element_type(key, "reshape_and_cache_fp8", [&](auto tag) {
      constexpr auto kern = fp8_cache_runs_kernel<decltype(tag)>;
      allow_smem<kern>(smem);
      kern<<<grid, kFp8RunThreads, smem, stream>>>(p);
    });
    return;
  }
  const int64_t zeroed = (int64_t)NB * (2 + 2 * Hkv) + 1;  // lowest offsets, amax, highest offsets, list count
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
  if (p.meta != nullptr) {
    TS_LAUNCH_CHECK();
    fp8_cache_meta_kernel<<<scale_blocks, threads, 0, stream>>>(p);
  }
}

torch::Tensor page_scores_fp8(const torch::Tensor& query, const torch::Tensor& meta, const torch::Tensor& kv_scales,
                              const torch::Tensor& block_tables, const torch::Tensor& seq_lens, double scale,
                              int64_t block_size) {
  TS_CHECK_CUDA(query);
  TS_CHECK_CUDA(meta);
  TS_CHECK_CUDA(kv_scales);
  TS_CHECK_CUDA(block_tables);
  TS_CHECK_CUDA(seq_lens);
  TS_CHECK_CONTIG(query);
  TS_CHECK_CONTIG(meta);
  TS_CHECK_CONTIG(kv_scales);
  TS_CHECK_CONTIG(block_tables);
  TS_CHECK_CONTIG(seq_lens);
  TORCH_CHECK(query.scalar_type() == torch::kHalf, "page_scores_fp8: the query must be fp16");
  TORCH_CHECK(meta.scalar_type() == at::kFloat8_e4m3fn && meta.dim() == 4 && meta.size(1) == 2,
              "page_scores_fp8: meta must be float8_e4m3fn [NB, 2, Hkv, D]");
  TORCH_CHECK(block_tables.scalar_type() == torch::kInt32 && seq_lens.scalar_type() == torch::kInt32,
              "block_tables and seq_lens must be int32");
  TORCH_CHECK(scale > 0, "scale must be positive");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2), Hkv = meta.size(2), M = block_tables.size(1);
  TORCH_CHECK(meta.size(3) == D && Hq % Hkv == 0 && Hq / Hkv <= 8, "query/meta shapes disagree (1..8 query heads a kv-head)");
  TORCH_CHECK(kv_scales.scalar_type() == torch::kFloat32 && kv_scales.dim() == 3 && kv_scales.size(0) == meta.size(0) &&
                  kv_scales.size(1) == 2 && kv_scales.size(2) == Hkv, "kv_scales must be float32 [NB, 2, Hkv]");
  TORCH_CHECK(D == 64 || D == 128, "head_dim must be 64 or 128");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(query.data_ptr()) % 16 == 0, "page_scores_fp8: the query must be 16-byte aligned");
  const c10::cuda::CUDAGuard guard(query.device());
  auto out = torch::empty({B, Hkv, M}, query.options().dtype(torch::kFloat32));
  if (B == 0 || M == 0) return out;
  PageScoreParams p = page_score_params(query, meta, block_tables, seq_lens, scale, (int)block_size,
                                        kMmaScorePages, out);  // one 16-page tile a warp, as the fp16 kernel
  p.kv_scales = kv_scales.data_ptr<float>();
  TORCH_CHECK((M + p.pages_per_cta - 1) / p.pages_per_cta <= 65535 && B <= 65535,
              "page_scores_fp8: too many pages or sequences for one launch");
  const dim3 grid(Hkv, (M + p.pages_per_cta - 1) / p.pages_per_cta, B);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (D == 64) launch_pdl(page_scores_fp8_kernel<64>, grid, kMmaScoreWarps * 32, 0, stream, p);
  else launch_pdl(page_scores_fp8_kernel<128>, grid, kMmaScoreWarps * 32, 0, stream, p);
  return out;
}

}  // namespace tinyserve
