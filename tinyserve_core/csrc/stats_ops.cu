// Glue for the selection-statistics kernels (kernels/selection_stats.cuh; spec:
// kernels/stats_reference.py, over an FP8 cache fp8_reference.selection_stats). Two launches per
// layer (the pages, then the rows), the output's and the scratch's shapes from the arguments
// and no host sync, so a captured decode graph holds it.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/selection_stats.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {

namespace {
int group_bound(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

// The pages kernel (grid: rows x chunks), then the row kernel (grid: kv-heads x batch).
template <typename T, int D, int G>
void launch_stats(const SelectionStatsParams& p, int B, int smem, cudaStream_t stream) {
  stats_pages_kernel<T, D, G><<<dim3(B * p.num_kv_heads, p.num_chunks), kStatsThreads, 0, stream>>>(p);
  TS_LAUNCH_CHECK();
  allow_smem<selection_stats_kernel<G>>(smem);  // as far as a launch needed so far
  selection_stats_kernel<G><<<dim3(p.num_kv_heads, B), kStatsThreads, smem, stream>>>(p);
}

template <typename T, int D>
void launch_group(int gmax, const SelectionStatsParams& p, int B, int smem, cudaStream_t stream) {
  switch (gmax) {
    case 1: launch_stats<T, D, 1>(p, B, smem, stream); break;
    case 2: launch_stats<T, D, 2>(p, B, smem, stream); break;
    case 4: launch_stats<T, D, 4>(p, B, smem, stream); break;
    default: launch_stats<T, D, 8>(p, B, smem, stream); break;
  }
}

template <typename T>
void launch_typed(int D, int gmax, const SelectionStatsParams& p, int B, int smem, cudaStream_t stream) {
  if (D == 64) launch_group<T, 64>(gmax, p, B, smem, stream);
  else launch_group<T, 128>(gmax, p, B, smem, stream);
}

const int* index_ptr(const std::optional<torch::Tensor>& t, int B, int H, const char* name) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->is_cuda() && t->is_contiguous() && t->scalar_type() == torch::kInt32, name,
              " must be a contiguous int32 CUDA tensor");
  TORCH_CHECK(t->dim() == 3 && t->size(0) == B && t->size(1) == H, name, " must be [B, Hkv, S]");
  return t->data_ptr<int>();
}

// A [B, H] tensor, possibly a broadcast view (strides may be 0); null when absent.
const void* bh_ptr(const std::optional<torch::Tensor>& t, int B, int H, int64_t* sb, int64_t* sh) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->is_cuda() && t->dim() == 2 && t->size(0) == B && t->size(1) == H,
              "entropy and budget must be [B, Hkv] CUDA tensors (broadcast views welcome)");
  *sb = t->stride(0), *sh = t->stride(1);
  return t->data_ptr();
}
}  // namespace

bool selection_stats_fits(int64_t group, int64_t max_pages) {
  // the row kernel's on the current device (selection_stats calls it under its CUDAGuard); the
  // opt-in limit also holds the kernel's static shared memory (reductions: under 1 KB)
  return stats_smem((int)group, (int)max_pages).total + 1024 <= smem_optin();
}

torch::Tensor selection_stats(const torch::Tensor& query, const torch::Tensor& k_cache, const torch::Tensor& meta,
                              const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                              const torch::Tensor& scores, const std::optional<torch::Tensor>& page_indices,
                              const std::optional<torch::Tensor>& candidates,
                              const std::optional<torch::Tensor>& entropy, const std::optional<torch::Tensor>& budget,
                              double scale, double rtol, const std::optional<torch::Tensor>& kv_scales) {
  for (const torch::Tensor* t : {&query, &k_cache, &meta, &block_tables, &seq_lens, &scores}) {
    TORCH_CHECK(t->is_cuda() && t->is_contiguous(), "selection_stats: inputs must be contiguous CUDA tensors");
  }
  const auto dt = k_cache.scalar_type();
  const bool fp8 = dt == at::kFloat8_e4m3fn;
  TORCH_CHECK(fp8 || dt == torch::kHalf || dt == torch::kBFloat16 || dt == torch::kFloat32,
              "cache must be fp16/bf16/fp32 or float8_e4m3fn");
  TORCH_CHECK(meta.scalar_type() == dt, "meta must have the cache dtype");
  TORCH_CHECK(fp8 == kv_scales.has_value(), "kv_scales go with a float8_e4m3fn cache, and only with one");
  TORCH_CHECK(query.scalar_type() == torch::kFloat32 || (!fp8 && query.scalar_type() == dt),
              "query must have the cache dtype or be float32 (float32 over an FP8 cache)");
  for (const torch::Tensor* t : {&k_cache, &meta}) {  // the kernel's 8/16-byte slice loads
    TORCH_CHECK(reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0,
                "selection_stats: caches must be 16-byte aligned");
  }
  TORCH_CHECK(block_tables.scalar_type() == torch::kInt32 && seq_lens.scalar_type() == torch::kInt32,
              "block_tables and seq_lens must be int32");
  TORCH_CHECK(scores.scalar_type() == torch::kFloat32, "scores must be float32");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2);
  const int BS = k_cache.size(1), H = k_cache.size(2), M = block_tables.size(1);
  TORCH_CHECK(D == 64 || D == 128, "head_dim must be 64 or 128");
  TORCH_CHECK(Hq % H == 0 && Hq / H <= 8, "1..8 query heads per kv-head");
  TORCH_CHECK(k_cache.size(3) == D && meta.size(1) == 2 && meta.size(2) == H && meta.size(3) == D, "cache shapes");
  TORCH_CHECK(scores.dim() == 3 && scores.size(0) == B && scores.size(1) == H && scores.size(2) == M,
              "scores must be [B, Hkv, M]");
  TORCH_CHECK(block_tables.size(0) == B && seq_lens.numel() == B, "block_tables [B, M] and seq_lens [B]");
  if (fp8) {
    TORCH_CHECK(kv_scales->is_cuda() && kv_scales->is_contiguous() && kv_scales->device() == k_cache.device() &&
                    kv_scales->scalar_type() == torch::kFloat32 && kv_scales->dim() == 3 &&
                    kv_scales->size(0) == k_cache.size(0) && kv_scales->size(1) == 2 && kv_scales->size(2) == H,
                "kv_scales must be a contiguous float32 [NB, 2, Hkv] tensor on the cache's device");
  }
  const c10::cuda::CUDAGuard guard(query.device());  // before the fit check: the limit is this device's
  auto out = torch::empty({B, H, kStatsChannels + 4 * M}, query.options().dtype(torch::kFloat32));
  if (B == 0 || H == 0) return out;
  TORCH_CHECK(M > 0, "selection_stats: a block table of width 0 (the torch spec takes it)");
  const int G = Hq / H, chunks = (M + kStatsChunk - 1) / kStatsChunk;
  // the pages kernel's logsumexps [B * H, G, M] and violation counts [B * H, chunks]
  auto scratch = torch::empty({(int64_t)B * H * ((int64_t)G * M + chunks)}, out.options());
  SelectionStatsParams p{};
  p.query = query.data_ptr(), p.k_cache = k_cache.data_ptr(), p.meta = meta.data_ptr();
  p.kv_scales = fp8 ? kv_scales->data_ptr<float>() : nullptr;
  p.block_tables = block_tables.data_ptr<int>(), p.seq_lens = seq_lens.data_ptr<int>();
  p.scores = scores.data_ptr<float>();
  p.page_indices = index_ptr(page_indices, B, H, "page_indices");
  p.candidates = index_ptr(candidates, B, H, "candidates");
  p.num_selected = page_indices ? page_indices->size(2) : 0;
  p.num_candidates = candidates ? candidates->size(2) : 0;
  TORCH_CHECK(!entropy || entropy->scalar_type() == torch::kFloat32, "entropy must be float32");
  TORCH_CHECK(!budget || budget->scalar_type() == torch::kFloat32 || budget->scalar_type() == torch::kInt64,
              "budget must be float32 or int64");
  p.entropy = static_cast<const float*>(bh_ptr(entropy, B, H, &p.entropy_sb, &p.entropy_sh));
  p.budget = bh_ptr(budget, B, H, &p.budget_sb, &p.budget_sh);
  p.budget_i64 = budget && budget->scalar_type() == torch::kInt64;
  p.out = out.data_ptr<float>();
  p.lse = scratch.data_ptr<float>();
  p.viol = p.lse + (int64_t)B * H * G * M;
  p.num_chunks = chunks;
  p.num_kv_heads = H, p.group = G, p.block_size = BS, p.max_pages = M;
  p.query_f32 = query.scalar_type() == torch::kFloat32 && dt != torch::kFloat32;
  p.scale = (float)scale, p.rtol = (float)rtol;
  const int smem = stats_smem(G, M).total;
  TORCH_CHECK(selection_stats_fits(G, M), "selection_stats: ", smem, " bytes of shared memory do not fit");
  TORCH_CHECK(chunks <= 65535, "selection_stats: at most ", 65535 * kStatsChunk, " pages a row");
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int gmax = group_bound(G);
  if (dt == torch::kHalf) launch_typed<__half>(D, gmax, p, B, smem, stream);
  else if (dt == torch::kBFloat16) launch_typed<__nv_bfloat16>(D, gmax, p, B, smem, stream);
  else if (fp8) launch_typed<__nv_fp8_e4m3>(D, gmax, p, B, smem, stream);
  else launch_typed<float>(D, gmax, p, B, smem, stream);
  TS_LAUNCH_CHECK();
  return out;
}

}  // namespace tinyserve
