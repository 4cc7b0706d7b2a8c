// Glue for the quantised-key ops of the twostage selector (kernels/quant_keys.cuh).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/quant_keys.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {

namespace {
// Runs `launch` with a value of the CUDA element type of a cache dtype, then checks the launch.
template <typename F>
void with_cache_type(at::ScalarType t, const char* op, F&& launch) {
  if (t == at::kHalf) launch(__half{});
  else if (t == at::kBFloat16) launch(__nv_bfloat16{});
  else if (t == at::kFloat) launch(float{});
  else TORCH_CHECK(false, op, ": unsupported dtype ", t);
  TS_LAUNCH_CHECK();
}

void check_qkeys(const torch::Tensor& qkeys, const torch::Tensor& meta, int64_t bits) {
  TS_CHECK_CUDA(qkeys);
  TS_CHECK_CONTIG(qkeys);
  TS_CHECK_CONTIG(meta);
  TORCH_CHECK(bits == 8 || bits == 4, "bits must be 8 or 4");
  TORCH_CHECK(qkeys.scalar_type() == torch::kUInt8 && qkeys.dim() == 4, "qkeys must be uint8 [NB,BS,Hkv,Dq]");
  TORCH_CHECK(meta.dim() == 4 && meta.size(0) == qkeys.size(0) && meta.size(1) == 2 &&
                  meta.size(2) == qkeys.size(2) && meta.size(3) * bits / 8 == qkeys.size(3),
              "meta must be [NB, 2, Hkv, D] with D * bits / 8 == qkeys' last dim");
}

void check_qbounds(const torch::Tensor& qbounds, int64_t num_kv_heads, int64_t head_dim) {
  TS_CHECK_CUDA(qbounds);
  TS_CHECK_CONTIG(qbounds);
  TORCH_CHECK(qbounds.scalar_type() == torch::kUInt8 && qbounds.dim() == 3 && qbounds.size(1) == num_kv_heads &&
                  qbounds.size(2) == bound_row_bytes((int)head_dim),
              "qbounds must be uint8 [NB, Hkv, 2 * head_dim + 32]");
}
}  // namespace

void quantize_keys(const torch::Tensor& k_cache, const torch::Tensor& meta, torch::Tensor& qkeys,
                   const torch::Tensor& slot_mapping, int64_t bits, const std::optional<torch::Tensor>& qbounds) {
  TS_CHECK_CUDA(k_cache);
  TS_CHECK_CONTIG(k_cache);
  TS_CHECK_CONTIG(slot_mapping);
  check_qkeys(qkeys, meta, bits);
  TORCH_CHECK(meta.scalar_type() == k_cache.scalar_type(), "meta must have the cache dtype");
  TORCH_CHECK(k_cache.sizes().slice(0, 3) == qkeys.sizes().slice(0, 3), "k_cache and qkeys disagree");
  TORCH_CHECK(slot_mapping.scalar_type() == torch::kInt64, "slot_mapping must be int64");
  if (qbounds) {
    check_qbounds(*qbounds, k_cache.size(2), k_cache.size(3));
    TORCH_CHECK(qbounds->size(0) == k_cache.size(0), "qbounds must have the cache's blocks");
  }
  const int T = slot_mapping.size(0);
  if (T == 0) return;
  const c10::cuda::CUDAGuard guard(k_cache.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const QuantKeysParams p{k_cache.data_ptr(), meta.data_ptr(), qkeys.data_ptr<uint8_t>(),
                          qbounds ? qbounds->data_ptr<uint8_t>() : nullptr, slot_mapping.data_ptr<int64_t>(), T,
                          (int)k_cache.size(2), (int)k_cache.size(3),
                          (int)k_cache.size(1)};
  const size_t smem = sizeof(float) * p.num_kv_heads;   // one page range per kv-head
  with_cache_type(k_cache.scalar_type(), "quantize_keys", [&](auto tag) {
    using CT = decltype(tag);
    if (bits == 8) quantize_keys_kernel<CT, 8><<<T, 128, smem, stream>>>(p);
    else quantize_keys_kernel<CT, 4><<<T, 128, smem, stream>>>(p);
  });
}

torch::Tensor page_estimates(const torch::Tensor& query, const torch::Tensor& qkeys, const torch::Tensor& meta,
                             const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                             const torch::Tensor& candidates, double scale, int64_t bits) {
  TS_CHECK_CUDA(query);
  TS_CHECK_CONTIG(query);
  TS_CHECK_CONTIG(block_tables);
  TS_CHECK_CONTIG(seq_lens);
  TS_CHECK_CONTIG(candidates);
  check_qkeys(qkeys, meta, bits);
  TORCH_CHECK(query.scalar_type() == torch::kFloat32 && query.dim() == 3, "query must be float32 [B,Hq,D]");
  TORCH_CHECK(candidates.scalar_type() == torch::kInt32 && block_tables.scalar_type() == torch::kInt32 &&
                  seq_lens.scalar_type() == torch::kInt32, "index tensors must be int32");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2);
  const int Hkv = qkeys.size(2), BS = qkeys.size(1), C = candidates.size(2);
  TORCH_CHECK(meta.size(3) == D && Hq % Hkv == 0 && Hq / Hkv <= 8, "1..8 query heads per kv-head, same head_dim");
  TORCH_CHECK(candidates.size(0) == B && candidates.size(1) == Hkv, "candidates must be [B, Hkv, C]");
  auto out = torch::empty({B, Hq, C}, query.options());
  if (B == 0 || C == 0) return out;
  const c10::cuda::CUDAGuard guard(query.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int G = Hq / Hkv;
  const PageEstimateParams p{query.data_ptr<float>(), qkeys.data_ptr<uint8_t>(), meta.data_ptr(),
                             block_tables.data_ptr<int>(), seq_lens.data_ptr<int>(), candidates.data_ptr<int>(),
                             out.data_ptr<float>(), Hq, Hkv, G, D, BS, (int)block_tables.size(1), C,
                             (float)scale};
  const int smem = page_estimates_smem_bytes(G, D, BS);
  const dim3 grid(C, Hkv, B);
  with_cache_type(meta.scalar_type(), "page_estimates", [&](auto tag) {
    using CT = decltype(tag);
    if (bits == 8) page_estimates_kernel<CT, 8><<<grid, kEstimateThreads, smem, stream>>>(p);
    else page_estimates_kernel<CT, 4><<<grid, kEstimateThreads, smem, stream>>>(p);
  });
  return out;
}

torch::Tensor page_scores_copy(const torch::Tensor& query, const torch::Tensor& qbounds,
                               const torch::Tensor& block_tables, const torch::Tensor& seq_lens, double scale,
                               int64_t block_size, int64_t tiles_per_warp) {
  TS_CHECK_CUDA(query);
  TS_CHECK_CONTIG(query);
  TS_CHECK_CONTIG(block_tables);
  TS_CHECK_CONTIG(seq_lens);
  TORCH_CHECK(query.dim() == 3, "query must be [B,Hq,D]");
  TORCH_CHECK(block_tables.scalar_type() == torch::kInt32 && seq_lens.scalar_type() == torch::kInt32,
              "index tensors must be int32");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2);
  TORCH_CHECK(D == 64 || D == 128, "page_scores_copy: head_dim 64 or 128");
  const int Hkv = qbounds.size(1);
  check_qbounds(qbounds, Hkv, D);
  TORCH_CHECK(Hq % Hkv == 0 && Hq / Hkv <= 8, "1..8 query heads per kv-head");
  TORCH_CHECK(block_size > 0, "block_size must be positive");
  TORCH_CHECK(tiles_per_warp >= 0 && tiles_per_warp <= 4096, "tiles_per_warp must be 0 (automatic) .. 4096");
  const int M = block_tables.size(1);
  auto out = torch::empty({B, Hkv, M}, query.options().dtype(torch::kFloat32));
  if (B == 0 || M == 0) return out;
  const c10::cuda::CUDAGuard guard(query.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  PageScoresCopyParams p{query.data_ptr(), qbounds.data_ptr<uint8_t>(), block_tables.data_ptr<int>(),
                               seq_lens.data_ptr<int>(), out.data_ptr<float>(), Hkv, Hq / Hkv, (int)block_size, M,
                               (float)scale, tiles_per_warp > 0 ? (int)tiles_per_warp : kCopyScoreTiles};
  const int tiles = (M + 15) / 16;
  auto ctas = [&](int tpw) { return (int64_t)B * Hkv * ceil_div(tiles, kCopyScoreWarps * tpw); };
  // Fewer tiles a warp while the grid is under 3 CTAs an SM (H200, 32K context: 1 tile at batch
  // 1, 6.5-6.8 against 11.6 us with 8; 4 at batch 8, 14.2 against 15.1; 8 at batch 64, 89.9 against
  // 112.2 with 1).
  if (tiles_per_warp <= 0)
    while (p.tiles_per_warp > 1 && ctas(p.tiles_per_warp) < 3 * (int64_t)sm_count()) p.tiles_per_warp /= 2;
  const dim3 grid(B * Hkv, ctas(p.tiles_per_warp) / (B * Hkv));
  with_cache_type(query.scalar_type(), "page_scores_copy", [&](auto tag) {   // the query's own dtype
    using QT = decltype(tag);
    if (D == 64) page_scores_copy_kernel<QT, 64><<<grid, 32 * kCopyScoreWarps, 0, stream>>>(p);
    else page_scores_copy_kernel<QT, 128><<<grid, 32 * kCopyScoreWarps, 0, stream>>>(p);
  });
  return out;
}

}  // namespace tinyserve
