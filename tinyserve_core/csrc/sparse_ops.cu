// Glue for the one-launch query-aware sparse decode (kernels/sparse_decode.cuh): its plan
// (splits per row, pages per score chunk), the counters it keeps between calls, checks
// and the launch.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "attention_params.h"
#include "kernels/sparse_decode.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {
namespace {

// Rows (sequence x kv-head) one launch may serve: the grid has at least one CTA a row and
// fits on the GPU at once, so this bounds the counters every device keeps.
constexpr int kSparseMaxRows = kCounterRows;

template <typename T, int D>
auto sparse_kernel() {
  allow_smem<sparse_decode_kernel<T, D>>(decode_smem_bytes<D>());
  return sparse_decode_kernel<T, D>;
}

// CTAs of the kernel the current GPU holds at once (its grid must not exceed them), the
// fewer of the fp16 and bf16 instances'.
template <typename T, int D>
int sparse_ctas_per_sm() {
  return resident_ctas<sparse_decode_kernel<T, D>>(kSparseThreads, decode_smem_bytes<D>());
}
template <int D>
int sparse_slots() {
  static const int per_sm = std::min(sparse_ctas_per_sm<__half, D>(), sparse_ctas_per_sm<__nv_bfloat16, D>());
  return per_sm * sm_count();
}

struct SparsePlan {
  int splits = 0;  // 0: the shape does not fit one launch
  int pages_per_split = 0, pages_per_chunk = 0, chunks = 0;
};

// Splits: as many as the resident slots allow, each warp at least one 16-token tile, each
// CTA at most kSparseMaxSplitPages pages; `want` > 0 asks for that many instead. Score
// chunks: the rows' pages shared evenly by the grid, in multiples of 64 pages (a 16-page
// tile for each of the CTA's 4 warps, kMmaScorePages).
SparsePlan plan_sparse(int64_t batch, int64_t hkv, int64_t max_blocks, int64_t k, int64_t block_size,
                       int64_t slots, int64_t want) {
  SparsePlan plan;
  const int64_t rows = batch * hkv;
  if (rows < 1 || rows > kSparseMaxRows || k < 1 || max_blocks < 1 ||
      max_blocks > (int64_t)kSparseThreads * kSparseMaxItems)
    return plan;
  const int64_t by_tiles = std::max<int64_t>(1, k * block_size / (kDecodeTile * kDecodeWarps));
  int64_t s = want > 0 ? want : std::min<int64_t>(slots / rows, by_tiles);
  s = std::min(s, k);
  if (s < 1 || rows * s > slots) return plan;
  const int64_t pps = (k + s - 1) / s;
  if (pps > kSparseMaxSplitPages) return plan;
  s = (k + pps - 1) / pps;  // no split without pages
  const int64_t per_cta = (rows * max_blocks + rows * s - 1) / (rows * s);
  plan.splits = (int)s;
  plan.pages_per_split = (int)pps;
  plan.pages_per_chunk = (int)((per_cta + kMmaScorePages - 1) / kMmaScorePages * kMmaScorePages);
  plan.chunks = (int)((max_blocks + plan.pages_per_chunk - 1) / plan.pages_per_chunk);
  return plan;
}

}  // namespace

int64_t sparse_decode_splits(int64_t batch, int64_t num_kv_heads, int64_t max_blocks, int64_t k,
                             int64_t block_size, int64_t head_dim) {
  if (head_dim != 64 && head_dim != 128) return 0;
  const int slots = head_dim == 64 ? sparse_slots<64>() : sparse_slots<128>();
  return plan_sparse(batch, num_kv_heads, max_blocks, k, block_size, slots, 0).splits;
}

std::vector<torch::Tensor> sparse_decode_attention(const torch::Tensor& query, const torch::Tensor& k_cache,
                                                   const torch::Tensor& v_cache, const torch::Tensor& meta,
                                                   const torch::Tensor& block_tables,
                                                   const torch::Tensor& seq_lens, double scale, int64_t k,
                                                   int64_t sink_pages, bool force_last, int64_t num_splits) {
  for (const torch::Tensor* t : {&query, &k_cache, &v_cache, &meta, &block_tables, &seq_lens}) {
    TORCH_CHECK(t->is_cuda() && t->is_contiguous(), "sparse_decode_attention: inputs must be contiguous CUDA tensors");
    TORCH_CHECK(t->device() == query.device(), "sparse_decode_attention: inputs on one device");
  }
  const auto dt = query.scalar_type();
  TORCH_CHECK(dt == torch::kHalf || dt == torch::kBFloat16, "sparse_decode_attention: fp16 or bf16");
  TORCH_CHECK(k_cache.scalar_type() == dt && v_cache.scalar_type() == dt && meta.scalar_type() == dt,
              "sparse_decode_attention: query, caches and meta share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == torch::kInt32 && seq_lens.scalar_type() == torch::kInt32,
              "block_tables and seq_lens must be int32");
  TORCH_CHECK(query.dim() == 3 && k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes(),
              "query [B,Hq,D], k_cache = v_cache [NB,BS,Hkv,D]");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2);
  const int BS = k_cache.size(1), Hkv = k_cache.size(2), M = block_tables.size(1);
  TORCH_CHECK(k_cache.size(3) == D && (D == 64 || D == 128), "head_dim 64 or 128, the same in query and cache");
  TORCH_CHECK(Hq % Hkv == 0 && Hq / Hkv <= kMaxGroup, "query heads per kv-head must be 1..8");
  TORCH_CHECK(meta.dim() == 4 && meta.size(0) == k_cache.size(0) && meta.size(1) == 2 && meta.size(2) == Hkv &&
                  meta.size(3) == D, "meta must be [NB, 2, Hkv, D]");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == B && seq_lens.size(0) == B, "batch sizes differ");
  TORCH_CHECK(scale > 0 && k >= 1 && sink_pages >= 0, "scale > 0, k >= 1, sink_pages >= 0");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(query.data_ptr()) % 16 == 0,
              "sparse_decode_attention: the query must be 16-byte aligned (its rows are read as 16-byte vectors)");
  const c10::cuda::CUDAGuard guard(query.device());
  const SparsePlan plan = plan_sparse(B, Hkv, M, k, BS, D == 64 ? sparse_slots<64>() : sparse_slots<128>(), num_splits);
  TORCH_CHECK(plan.splits > 0, "sparse_decode_attention: this shape does not fit one launch (sparse_decode_splits is 0)");

  auto f32 = query.options().dtype(torch::kFloat32);
  auto out = torch::empty_like(query);
  auto scores = torch::empty({B, Hkv, M}, f32);
  auto pages = torch::empty({B, Hkv, k}, query.options().dtype(torch::kInt32));
  torch::Tensor part_o, part_lse;
  SparseDecodeParams sp{};
  sp.dec = decode_params(query, k_cache, v_cache, block_tables, seq_lens, scale, out, decode_l2_prefetch());
  sp.dec.num_splits = plan.splits;
  if (plan.splits > 1) {
    part_o = torch::empty({B, Hq, plan.splits, D}, f32);
    part_lse = torch::empty({B, Hq, plan.splits}, f32);
    sp.dec.part_o = part_o.data_ptr<float>();
    sp.dec.part_lse = part_lse.data_ptr<float>();
  }
  sp.score = page_score_params(query, meta, block_tables, seq_lens, scale, BS, plan.pages_per_chunk, scores);
  sp.page_indices = pages.data_ptr<int>();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  sp.counters = row_counters(0, stream);  // regions 0 and 1
  TORCH_CHECK(sp.counters != nullptr,
              "sparse_decode_attention: the first call on a device must come before CUDA-graph capture");
  sp.k = (int)k;
  sp.sink_pages = (int)std::min<int64_t>(sink_pages, M);
  sp.force_last = force_last ? 1 : 0;
  sp.chunks = plan.chunks;
  sp.pages_per_split = plan.pages_per_split;
  const dim3 grid(B * Hkv * plan.splits);
  const size_t smem = D == 64 ? decode_smem_bytes<64>() : decode_smem_bytes<128>();
  auto launch = [&](auto kern) { launch_pdl(kern, grid, kSparseThreads, smem, stream, sp); };
  if (dt == torch::kHalf) D == 64 ? launch(sparse_kernel<__half, 64>()) : launch(sparse_kernel<__half, 128>());
  else D == 64 ? launch(sparse_kernel<__nv_bfloat16, 64>()) : launch(sparse_kernel<__nv_bfloat16, 128>());
  TS_LAUNCH_CHECK();
  return {out, pages, scores};
}

}  // namespace tinyserve
