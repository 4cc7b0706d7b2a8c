// Glue for paged_decode_attention and page_scores: checks, dtype/head-dim dispatch,
// the split-K plan and the launches.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cmath>

#include "attention_params.h"
#include "kernels/page_scores_mma.cuh"
#include "kernels/paged_attention_fp8.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {
namespace {

template <typename T> struct CudaType;
template <> struct CudaType<at::Half> { using type = __half; };
template <> struct CudaType<at::BFloat16> { using type = __nv_bfloat16; };
template <> struct CudaType<float> { using type = float; };

// The per-device launch policy (kernels/tuning.py loads the row of csrc/tuning.json for the
// GPU and passes it to set_tuning). Defaults: the constants measured best on an H100.
struct Tuning {
  int split_min_tiles = 2 * kDecodeWarps;  // tiles per split at least (the merge stays negligible)
  double split_cost = 0.002;               // relative cost of each extra split in the plan
  int max_splits = 256;
  int score_max_ppc = 128;                 // page_scores: pages per CTA on large grids ...
  double score_min_ctas_per_sm = 8.0;      // ... halved until the grid has this many CTAs per SM
  // Decode K/V copies with the L2::256B hint: off unless a device's row measured it faster
  // (an H200 streamed 7% slower with it; the H100 row keeps the hint it was tuned with).
  int decode_l2_prefetch = 0;
  // Query-aware sparse decode runs as one launch (sparse_ops.cu) up to this batch size,
  // as page_scores + select_pages + paged decode above it.
  int sparse_fused_max_batch = 0;
  // Paged decode's split partials are merged by each row's last CTA in the decode launch
  // when there are at most this many splits, by decode_merge_kernel after it otherwise
  // (0: never in the launch). The last CTA reads the S partials after its own work, so few splits pay
  // (an H200 gained 0.3-0.7 us at batch 8 with 4 splits, lost 0.6 us at batch 1 with 32).
  int decode_merge_max_splits = 4;
};
Tuning g_tuning;
// page_scores on tensor cores for fp16/bf16 (kernels/page_scores_mma.cuh); set_score_mma(False)
// runs the FMA kernel instead, for A/B runs and its tests. The one-launch sparse decode always
// scores on tensor cores (the same bits).
bool g_score_mma = true;

// The decode kernel instance (MERGE: the splits merged in the launch; WINDOW: the page
// lookups from a window per warp), with its dynamic shared memory allowed.
template <typename T, int D, bool MERGE = false, bool WINDOW = false>
auto decode_kernel() {
  allow_smem<paged_decode_kernel<T, D, MERGE, WINDOW>>(decode_smem_bytes<D>());
  return paged_decode_kernel<T, D, MERGE, WINDOW>;
}

// Resident CTAs per SM: the split plan fills them.
template <typename T, int D>
int decode_ctas_per_sm() {
  return std::max(1, resident_ctas<paged_decode_kernel<T, D, false, false>>(kDecodeWarps * 32, decode_smem_bytes<D>()));
}

// Flash-decoding split count: enough CTAs to fill every resident slot of the GPU when
// batch x kv-heads alone cannot, chosen to minimise (waves x tiles per split), with at
// least g_tuning.split_min_tiles tiles in a split.
int plan_splits(int64_t units, int64_t max_tokens, int slots) {
  const int64_t tiles = std::max<int64_t>(1, (max_tokens + kDecodeTile - 1) / kDecodeTile);
  const int64_t max_splits = std::max<int64_t>(
      1, std::min<int64_t>(g_tuning.max_splits, tiles / std::max(1, g_tuning.split_min_tiles)));
  int64_t best = 1;
  double best_cost = 1e300;
  for (int64_t s = 1; s <= max_splits; ++s) {
    const int64_t waves = (units * s + slots - 1) / slots;
    const int64_t per = (tiles + s - 1) / s;
    // Each extra split costs a partial write + merge read; weigh it lightly.
    const double cost = double(waves) * double(per) * (1.0 + g_tuning.split_cost * s);
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      best = s;
    }
  }
  return (int)best;
}

// Block sizes that are a power of 2 of at least one tile take the windowed page lookups.
template <typename T, int D, bool WINDOW>
void launch_decode_as(DecodeParams& p, int batch, cudaStream_t stream) {
  const dim3 grid(p.num_splits, p.num_kv_heads, batch);
  if (p.split_counters != nullptr) {  // set only with splits
    launch_pdl(decode_kernel<T, D, true, WINDOW>(), grid, kDecodeWarps * 32, decode_smem_bytes<D>(), stream, p);
    return;
  }
  launch_pdl(decode_kernel<T, D, false, WINDOW>(), grid, kDecodeWarps * 32, decode_smem_bytes<D>(), stream, p);
  if (p.num_splits > 1)
    launch_pdl(decode_merge_kernel<T, D>, dim3(p.num_q_heads, batch), D / 4 * kMergeParts, 0, stream, p);
}

template <typename T, int D>
void launch_decode(DecodeParams& p, int batch, cudaStream_t stream) {
  if (p.block_shift >= 4) launch_decode_as<T, D, true>(p, batch, stream);
  else launch_decode_as<T, D, false>(p, batch, stream);
}

// The FP8-cache variant: fp16 queries and outputs, the pages' scales beside the cache.
template <int D, bool WINDOW>
void launch_fp8_as(const Fp8DecodeParams& fp, int batch, cudaStream_t stream) {
  const DecodeParams& p = fp.base;
  allow_smem<paged_decode_fp8_kernel<D, WINDOW>>(fp8_decode_smem_bytes<D>());
  launch_pdl(paged_decode_fp8_kernel<D, WINDOW>, dim3(p.num_splits, p.num_kv_heads, batch), kDecodeWarps * 32,
             fp8_decode_smem_bytes<D>(), stream, fp);
}

template <int D>
void launch_decode_fp8(const DecodeParams& p, const float* scales, int batch, cudaStream_t stream) {
  const Fp8DecodeParams fp{p, scales};
  // Selected pages take their lookups from a window (page list, then block table, per 32 tiles):
  // 8 x 32K 19.2-19.5 -> 17.9-18.1 us, batch 64 unchanged. The dense stream keeps a lookup per
  // token: at 4 CTAs an SM the other warps hide it, and the window was 4% slower (H200, twenty-
  // fourth session).
  if (p.block_shift >= 4 && p.page_indices != nullptr) launch_fp8_as<D, true>(fp, batch, stream);
  else launch_fp8_as<D, false>(fp, batch, stream);
  if (p.num_splits > 1)
    launch_pdl(decode_merge_kernel<__half, D>, dim3(p.num_q_heads, batch), D / 4 * kMergeParts, 0, stream, p);
}

template <typename T, int D>
int splits_for(int64_t units, int64_t max_tokens) {
  return plan_splits(units, max_tokens, sm_count() * decode_ctas_per_sm<T, D>());
}

// The FP8 kernel's own resident CTAs (4 an SM where the fp16 kernel has 2): planned with the
// fp16 kernel's slots, a batch of 8 at 32K filled half the GPU (169 us against 142, H200).
template <int D>
int fp8_splits_for(int64_t units, int64_t max_tokens) {
  const int ctas = resident_ctas<paged_decode_fp8_kernel<D>>(kDecodeWarps * 32, fp8_decode_smem_bytes<D>());
  return plan_splits(units, max_tokens, sm_count() * std::max(1, ctas));
}

}  // namespace

void set_tuning(int64_t split_min_tiles, double split_cost, int64_t max_splits, int64_t score_max_ppc,
                double score_min_ctas_per_sm, int64_t decode_l2_prefetch, int64_t sparse_fused_max_batch,
                int64_t decode_merge_max_splits) {
  TORCH_CHECK(split_min_tiles >= 1 && max_splits >= 1 && max_splits <= 4096 && split_cost >= 0,
              "set_tuning: split parameters out of range");
  TORCH_CHECK(score_max_ppc >= 16 && score_max_ppc <= 4096 && score_min_ctas_per_sm >= 0,
              "set_tuning: page_scores parameters out of range");
  TORCH_CHECK(decode_l2_prefetch == 0 || decode_l2_prefetch == 1, "set_tuning: decode_l2_prefetch is 0 or 1");
  TORCH_CHECK(sparse_fused_max_batch >= 0 && sparse_fused_max_batch <= 256,
              "set_tuning: sparse_fused_max_batch is 0..256");
  TORCH_CHECK(decode_merge_max_splits >= 0 && decode_merge_max_splits <= 4096,
              "set_tuning: decode_merge_max_splits is 0..4096");
  g_tuning = Tuning{(int)split_min_tiles, split_cost, (int)max_splits, (int)score_max_ppc, score_min_ctas_per_sm,
                    (int)decode_l2_prefetch, (int)sparse_fused_max_batch, (int)decode_merge_max_splits};
}

int decode_l2_prefetch() { return g_tuning.decode_l2_prefetch; }

int64_t sparse_fused_max_batch() { return g_tuning.sparse_fused_max_batch; }

// page_scores' pages per CTA: g_tuning.score_max_ppc, halved (down to 16) while the grid
// would have fewer than score_min_ctas_per_sm CTAs per SM to spread the reads.
int64_t page_scores_ppc(int64_t batch, int64_t num_kv_heads, int64_t max_blocks) {
  int64_t ppc = g_tuning.score_max_ppc;
  while (ppc > 16 && batch * num_kv_heads * ((max_blocks + ppc - 1) / ppc) < g_tuning.score_min_ctas_per_sm * sm_count())
    ppc /= 2;
  return ppc;
}

int64_t decode_num_splits(int64_t batch, int64_t num_kv_heads, int64_t max_tokens, int64_t head_dim) {
  return head_dim == 64 ? splits_for<__half, 64>(batch * num_kv_heads, max_tokens)
                        : splits_for<__half, 128>(batch * num_kv_heads, max_tokens);
}

torch::Tensor paged_decode_attention(const torch::Tensor& query, const torch::Tensor& k_cache,
                                     const torch::Tensor& v_cache, const torch::Tensor& block_tables,
                                     const torch::Tensor& seq_lens, double scale,
                                     const std::optional<torch::Tensor>& page_indices,
                                     int64_t num_splits, const std::optional<torch::Tensor>& kv_scales) {
  TS_CHECK_CUDA(query);
  TS_CHECK_CUDA(k_cache);
  TS_CHECK_CUDA(v_cache);
  TS_CHECK_CONTIG(query);
  TS_CHECK_CONTIG(k_cache);
  TS_CHECK_CONTIG(v_cache);
  TS_CHECK_CONTIG(block_tables);
  TS_CHECK_CONTIG(seq_lens);
  TORCH_CHECK(query.dim() == 3 && k_cache.dim() == 4, "query [B,Hq,D], k_cache [NB,BS,Hkv,D]");
  TORCH_CHECK(k_cache.sizes() == v_cache.sizes(), "k_cache and v_cache shapes differ");
  // An FP8 (e4m3) cache comes with its pages' scales [NB, 2, Hkv] and fp16 queries.
  const bool fp8 = k_cache.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK(k_cache.scalar_type() == v_cache.scalar_type(), "k_cache and v_cache must share a dtype");
  TORCH_CHECK(fp8 ? query.scalar_type() == torch::kHalf : query.scalar_type() == k_cache.scalar_type(),
              "query must have the cache dtype (fp16 for an FP8 cache)");
  TORCH_CHECK(fp8 == kv_scales.has_value(), "kv_scales go with an FP8 cache, and only with one");
  if (fp8) {
    const auto& s = *kv_scales;
    TS_CHECK_CUDA(s);
    TS_CHECK_CONTIG(s);
    TORCH_CHECK(s.scalar_type() == torch::kFloat32 && s.dim() == 3 && s.size(0) == k_cache.size(0) &&
                    s.size(1) == 2 && s.size(2) == k_cache.size(2), "kv_scales must be float32 [NB, 2, Hkv]");
  }
  TORCH_CHECK(block_tables.scalar_type() == torch::kInt32 && seq_lens.scalar_type() == torch::kInt32,
              "block_tables and seq_lens must be int32");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2);
  const int BS = k_cache.size(1), Hkv = k_cache.size(2);
  TORCH_CHECK(k_cache.size(3) == D, "head_dim of query and cache differ");
  TORCH_CHECK(D == 64 || D == 128, "head_dim must be 64 or 128, got ", D);
  TORCH_CHECK(Hq % Hkv == 0 && Hq / Hkv <= kMaxGroup, "query heads per kv-head must be 1..8");
  TORCH_CHECK(block_tables.size(0) == B && seq_lens.size(0) == B, "batch sizes differ");
  const c10::cuda::CUDAGuard guard(query.device());

  auto out = torch::empty_like(query);
  if (B == 0) return out;
  DecodeParams p = decode_params(query, k_cache, v_cache, block_tables, seq_lens, scale, out,
                                 g_tuning.decode_l2_prefetch);
  int64_t max_tokens = (int64_t)block_tables.size(1) * BS;
  if (page_indices.has_value()) {
    const auto& pi = *page_indices;
    TS_CHECK_CUDA(pi);
    TS_CHECK_CONTIG(pi);
    TORCH_CHECK(pi.scalar_type() == torch::kInt32 && pi.dim() == 3 && pi.size(0) == B && pi.size(1) == Hkv,
                "page_indices must be int32 [B, Hkv, S]");
    p.page_indices = pi.data_ptr<int>();
    p.max_sel = pi.size(2);
    max_tokens = (int64_t)p.max_sel * BS;
  }

  const bool half = query.scalar_type() == torch::kHalf;
  TORCH_CHECK(half || query.scalar_type() == torch::kBFloat16, "paged_decode_attention: fp16 or bf16");
  int splits = (int)num_splits;
  if (splits <= 0)
    splits = !fp8 ? (int)decode_num_splits(B, Hkv, max_tokens, D)
             : D == 64 ? fp8_splits_for<64>(B * Hkv, max_tokens) : fp8_splits_for<128>(B * Hkv, max_tokens);
  const int64_t tiles = std::max<int64_t>(1, (max_tokens + kDecodeTile - 1) / kDecodeTile);
  splits = (int)std::min<int64_t>(splits, tiles);
  const int64_t chunk_tiles = (tiles + splits - 1) / splits;
  p.chunk_tokens = (int)(chunk_tiles * kDecodeTile);
  p.num_splits = (int)((tiles + chunk_tiles - 1) / chunk_tiles);

  torch::Tensor part_o, part_lse;
  if (p.num_splits > 1) {
    auto f32 = query.options().dtype(torch::kFloat32);
    part_o = torch::empty({B, Hq, p.num_splits, D}, f32);
    part_lse = torch::empty({B, Hq, p.num_splits}, f32);
    p.part_o = part_o.data_ptr<float>();
    p.part_lse = part_lse.data_ptr<float>();
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // The FP8 kernel keeps the separate merge; so does a batch with more rows than counters,
  // and a first call made inside a CUDA-graph capture (row_counters: nullptr).
  if (p.num_splits > 1 && p.num_splits <= g_tuning.decode_merge_max_splits && !fp8 && (int64_t)B * Hkv <= kCounterRows)
    p.split_counters = row_counters(2, stream);
  if (fp8) {
    const float* scales = kv_scales->data_ptr<float>();
    if (D == 64) launch_decode_fp8<64>(p, scales, B, stream);
    else launch_decode_fp8<128>(p, scales, B, stream);
  } else if (half) {
    if (D == 64) launch_decode<__half, 64>(p, B, stream);
    else launch_decode<__half, 128>(p, B, stream);
  } else {
    if (D == 64) launch_decode<__nv_bfloat16, 64>(p, B, stream);
    else launch_decode<__nv_bfloat16, 128>(p, B, stream);
  }
  return out;
}

torch::Tensor page_scores(const torch::Tensor& query, const torch::Tensor& meta,
                          const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                          double scale, int64_t block_size, int64_t pages_per_cta) {
  TS_CHECK_CUDA(query);
  TS_CHECK_CUDA(meta);
  TS_CHECK_CONTIG(query);
  TS_CHECK_CONTIG(meta);
  TS_CHECK_CONTIG(block_tables);
  TS_CHECK_CONTIG(seq_lens);
  TORCH_CHECK(query.scalar_type() == meta.scalar_type(), "query and meta must share a dtype");
  TORCH_CHECK(meta.dim() == 4 && meta.size(1) == 2, "meta must be [NB, 2, Hkv, D]");
  TORCH_CHECK(block_tables.scalar_type() == torch::kInt32 && seq_lens.scalar_type() == torch::kInt32,
              "block_tables and seq_lens must be int32");
  TORCH_CHECK(scale > 0, "scale must be positive");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2), Hkv = meta.size(2);
  TORCH_CHECK(meta.size(3) == D && Hq % Hkv == 0, "query/meta shapes disagree");
  TORCH_CHECK(D == 64 || D == 128, "head_dim must be 64 or 128");
  const int M = block_tables.size(1);
  const c10::cuda::CUDAGuard guard(query.device());
  auto out = torch::empty({B, Hkv, M}, query.options().dtype(torch::kFloat32));
  if (B == 0 || M == 0) return out;
  TORCH_CHECK(pages_per_cta >= 0 && pages_per_cta <= 4096, "pages_per_cta must be 0 (automatic) .. 4096, got ",
              pages_per_cta);
  // fp16 / bf16 with up to 8 query heads a kv-head and a 16-byte-aligned query (its loads are
  // 16-byte vectors): the tensor-core kernel, one 16-page tile a warp unless the caller asks for
  // more (a page's score does not depend on the split). One tile a warp measured fastest at
  // every batch (H200, 32K context: 64 pages a CTA 134.5 us at batch 64, 512 pages 147.3 us), so
  // the FMA kernel's plan (page_scores_ppc) is not consulted.
  const bool mma = g_score_mma && (query.scalar_type() == torch::kHalf || query.scalar_type() == torch::kBFloat16) &&
                   Hq / Hkv <= 8 && reinterpret_cast<uintptr_t>(query.data_ptr()) % 16 == 0;
  int ppc = (int)pages_per_cta;
  if (mma) ppc = ppc > 0 ? (ppc + kMmaScorePages - 1) / kMmaScorePages * kMmaScorePages : kMmaScorePages;
  else if (ppc == 0) ppc = (int)page_scores_ppc(B, Hkv, M);
  const PageScoreParams p = page_score_params(query, meta, block_tables, seq_lens, scale, (int)block_size, ppc, out);
  TORCH_CHECK((M + p.pages_per_cta - 1) / p.pages_per_cta <= 65535 && B <= 65535, "page_scores: too many pages or sequences for one launch");
  const dim3 grid(Hkv, (M + p.pages_per_cta - 1) / p.pages_per_cta, B);
  const size_t smem = page_scores_smem_bytes(p.group, D, p.pages_per_cta);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (mma) {
    const bool half = query.scalar_type() == torch::kHalf;
    auto launch = [&](auto kern) { launch_pdl(kern, grid, kMmaScoreWarps * 32, 0, stream, p); };
#define TS_SCORE_MMA(ATYPE, DIM)                                \
    if (half == std::is_same_v<ATYPE, __half> && D == DIM) { \
      launch(page_scores_mma_kernel<ATYPE, DIM>);            \
      return out;                                            \
    }
    TINYSERVE_SCORE_MMA_INSTANCES(TS_SCORE_MMA)
#undef TS_SCORE_MMA
  }
  // the head loop unrolled for groups of 4 query heads (TINYSERVE_SCORE_GROUPS)
  const int g = p.group == 4 ? 4 : 0;
#define TS_SCORE_G(ATYPE, DIM, G)                                                              \
  if (g == G) {                                                                               \
    constexpr auto kern = page_scores_kernel<CudaType<ATYPE>::type, DIM, G>;                  \
    allow_smem<kern>(smem);                                                                   \
    launch_pdl(kern, grid, kScoreWarps * 32, smem, stream, p);                                \
    return out;                                                                               \
  }
#define TS_SCORE_CASE(ATYPE, DIM)                                                              \
  if (query.scalar_type() == c10::CppTypeToScalarType<ATYPE>::value && D == DIM) {            \
    TINYSERVE_SCORE_GROUPS(TS_SCORE_G, ATYPE, DIM)                                            \
  }
  TS_SCORE_CASE(at::Half, 64)
  TS_SCORE_CASE(at::Half, 128)
  TS_SCORE_CASE(at::BFloat16, 64)
  TS_SCORE_CASE(at::BFloat16, 128)
  TS_SCORE_CASE(float, 64)
  TS_SCORE_CASE(float, 128)
#undef TS_SCORE_CASE
#undef TS_SCORE_G
  TORCH_CHECK(false, "page_scores: unsupported dtype");
}

torch::Tensor select_pages(const torch::Tensor& scores, int64_t k) {
  TS_CHECK_CUDA(scores);
  TS_CHECK_CONTIG(scores);
  TORCH_CHECK(scores.scalar_type() == torch::kFloat32 && scores.dim() == 3, "scores must be float32 [B, Hkv, M]");
  TORCH_CHECK(k >= 0, "k must be >= 0");
  const int64_t rows = scores.size(0) * scores.size(1), M = scores.size(2);
  TORCH_CHECK(M <= (int64_t)kSelectThreads * kSelectMaxItems, "select_pages: rows longer than ",
              kSelectThreads * kSelectMaxItems, " pages go to torch.topk");
  const c10::cuda::CUDAGuard guard(scores.device());
  auto out = torch::empty({scores.size(0), scores.size(1), k}, scores.options().dtype(torch::kInt32));
  if (rows == 0 || k == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float* s = scores.data_ptr<float>();
  int* o = out.data_ptr<int>();
  const int items = M <= kSelectThreads ? 1 : M <= 2 * kSelectThreads ? 2 : M <= 4 * kSelectThreads ? 4
                  : M <= 8 * kSelectThreads ? 8 : 16;
#define TS_SELECT_CASE(N) \
  if (items == N) launch_pdl(select_pages_kernel<N>, dim3(rows), kSelectThreads, 0, stream, s, (int)M, (int)k, o);
  TINYSERVE_SELECT_INSTANCES(TS_SELECT_CASE)
#undef TS_SELECT_CASE
  return out;
}

bool set_score_mma(bool enabled) {  // returns the setting it replaced
  const bool was = g_score_mma;
  g_score_mma = enabled;
  return was;
}

bool set_pdl(bool enabled) {  // returns the setting it replaced, so a caller can restore it
  const bool was = g_pdl;
  g_pdl = enabled;
  return was;
}

}  // namespace tinyserve
