// Torch-facing entry points of the TinyServe CUDA extension (see bindings.cpp).
#pragma once

#include <torch/extension.h>

#include <optional>
#include <vector>

namespace tinyserve {

void reshape_and_cache(const torch::Tensor& key, const torch::Tensor& value, torch::Tensor& k_cache,
                       torch::Tensor& v_cache, const std::optional<torch::Tensor>& meta,
                       const torch::Tensor& slot_mapping, bool one_per_page = false,
                       const std::optional<torch::Tensor>& runs = std::nullopt);

torch::Tensor paged_decode_attention(const torch::Tensor& query, const torch::Tensor& k_cache,
                                     const torch::Tensor& v_cache, const torch::Tensor& block_tables,
                                     const torch::Tensor& seq_lens, double scale,
                                     const std::optional<torch::Tensor>& page_indices,
                                     int64_t num_splits, const std::optional<torch::Tensor>& kv_scales);

int64_t decode_num_splits(int64_t batch, int64_t num_kv_heads, int64_t max_tokens, int64_t head_dim);

void set_tuning(int64_t split_min_tiles, double split_cost, int64_t max_splits, int64_t score_max_ppc,
                double score_min_ctas_per_sm, int64_t decode_l2_prefetch, int64_t sparse_fused_max_batch,
                int64_t decode_merge_max_splits);
// the tuning in force: the decode copies' L2 hint, the largest batch of the one-launch sparse path
int decode_l2_prefetch();
int64_t sparse_fused_max_batch();

// sparse_ops.cu: query-aware sparse decode in one launch for small batches. Splits per
// (sequence, kv-head) row of its plan, 0 when the shape does not fit one launch.
int64_t sparse_decode_splits(int64_t batch, int64_t num_kv_heads, int64_t max_blocks, int64_t k,
                             int64_t block_size, int64_t head_dim);
// {out [B, Hq, D], page_indices int32 [B, Hkv, k], scores float32 [B, Hkv, M]}
std::vector<torch::Tensor> sparse_decode_attention(const torch::Tensor& query, const torch::Tensor& k_cache,
                                                   const torch::Tensor& v_cache, const torch::Tensor& meta,
                                                   const torch::Tensor& block_tables,
                                                   const torch::Tensor& seq_lens, double scale, int64_t k,
                                                   int64_t sink_pages, bool force_last, int64_t num_splits);

int64_t page_scores_ppc(int64_t batch, int64_t num_kv_heads, int64_t max_blocks);

torch::Tensor page_scores(const torch::Tensor& query, const torch::Tensor& meta,
                          const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                          double scale, int64_t block_size, int64_t pages_per_cta);

torch::Tensor select_pages(const torch::Tensor& scores, int64_t k);

bool set_pdl(bool enabled);
bool set_score_mma(bool enabled);

void copy_blocks(const std::vector<torch::Tensor>& tensors, const torch::Tensor& block_mapping);

torch::Tensor allocate_blocks(torch::Tensor& refcounts, int64_t num);

// fp8_ops.cu: writes into an FP8 (e4m3) cache with per-(page, kv-head) scales
void reshape_and_cache_fp8(const torch::Tensor& key, const torch::Tensor& value, torch::Tensor& k_cache,
                           torch::Tensor& v_cache, torch::Tensor& kv_scales, const torch::Tensor& slot_mapping,
                           bool one_per_page, const std::optional<torch::Tensor>& runs,
                           const std::optional<torch::Tensor>& meta);
// page_scores over an FP8 cache's e4m3 page bounds (fp16 query)
torch::Tensor page_scores_fp8(const torch::Tensor& query, const torch::Tensor& meta, const torch::Tensor& kv_scales,
                              const torch::Tensor& block_tables, const torch::Tensor& seq_lens, double scale,
                              int64_t block_size);

// quant_ops.cu: the twostage selector's quantised key copy
void quantize_keys(const torch::Tensor& k_cache, const torch::Tensor& meta, torch::Tensor& qkeys,
                   const torch::Tensor& slot_mapping, int64_t bits,
                   const std::optional<torch::Tensor>& qbounds = std::nullopt);

// twostage's stage 1 over the int8 bound copy (kernels/bound_copy.cuh): float32 [B, Hkv, M]
torch::Tensor page_scores_copy(const torch::Tensor& query, const torch::Tensor& qbounds,
                               const torch::Tensor& block_tables, const torch::Tensor& seq_lens, double scale,
                               int64_t block_size, int64_t tiles_per_warp = 0);

torch::Tensor page_estimates(const torch::Tensor& query, const torch::Tensor& qkeys, const torch::Tensor& meta,
                             const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                             const torch::Tensor& candidates, double scale, int64_t bits);

// twostage_ops.cu: the twostage selector's fused estimate and selections
void set_lse_mma(bool enabled);
void set_lse_pages_per_warp(int64_t most);
torch::Tensor estimate_page_lse(const torch::Tensor& query, const torch::Tensor& qkeys, const torch::Tensor& meta,
                                const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                                const torch::Tensor& candidates, double scale, int64_t bits);

torch::Tensor twostage_candidates(const torch::Tensor& scores, const torch::Tensor& seq_lens,
                                  const torch::Tensor& budget, int64_t block_size, double multiple, double top_p,
                                  int64_t sink_pages, int64_t width);

std::vector<torch::Tensor> twostage_keep(const torch::Tensor& lse, const torch::Tensor& candidates,
                                         const torch::Tensor& seq_lens, const torch::Tensor& budget,
                                         int64_t block_size, double top_p, int64_t sink_pages, int64_t width);

// stats_ops.cu: one decode layer's selection statistics (kernels/stats_reference.py)
bool selection_stats_fits(int64_t group, int64_t max_pages);
torch::Tensor selection_stats(const torch::Tensor& query, const torch::Tensor& k_cache, const torch::Tensor& meta,
                              const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                              const torch::Tensor& scores, const std::optional<torch::Tensor>& page_indices,
                              const std::optional<torch::Tensor>& candidates,
                              const std::optional<torch::Tensor>& entropy, const std::optional<torch::Tensor>& budget,
                              double scale, double rtol, const std::optional<torch::Tensor>& kv_scales);

// fused_ops.cu: fused elementwise steps of a decoder layer (kernels/fused_reference.py)
std::vector<torch::Tensor> rms_norm(const torch::Tensor& x, const std::optional<torch::Tensor>& delta,
                                    const torch::Tensor& weight, double eps);

void rotary_embedding(torch::Tensor& q, torch::Tensor& k, const torch::Tensor& positions,
                      const torch::Tensor& inv_freq);

torch::Tensor silu_and_mul(const torch::Tensor& gate_up);

// weight_first: the weight and bias are not written by the kernel launched just before
// (a model's weights): the product starts loading them before that kernel finishes.
torch::Tensor skinny_gemm(const torch::Tensor& x, const torch::Tensor& weight, const std::optional<torch::Tensor>& bias,
                          bool weight_first);

}  // namespace tinyserve

#define TS_CHECK_CUDA(x) TORCH_CHECK((x).is_cuda(), #x " must be a CUDA tensor")
#define TS_CHECK_CONTIG(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define TS_CUDA_CHECK(expr)                                                      \
  do {                                                                           \
    cudaError_t err__ = (expr);                                                  \
    TORCH_CHECK(err__ == cudaSuccess, "CUDA error: ", cudaGetErrorString(err__)); \
  } while (0)
#define TS_LAUNCH_CHECK() TS_CUDA_CHECK(cudaGetLastError())

namespace tinyserve {
// A cache write's `runs` argument (cache_runs.page_runs: int32 [R, 2], first token and count),
// checked; its row count goes to `num_runs`.
inline const int* checked_page_runs(const torch::Tensor& r, int& num_runs) {
  TS_CHECK_CUDA(r);
  TS_CHECK_CONTIG(r);
  TORCH_CHECK(r.scalar_type() == torch::kInt32 && r.dim() == 2 && r.size(1) == 2,
              "runs must be int32 [R, 2] (first token, count)");
  num_runs = (int)r.size(0);
  return r.data_ptr<int>();
}
}  // namespace tinyserve
