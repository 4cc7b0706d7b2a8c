// Glue for the fused stage-2 (and stage-1 selection) kernels of the twostage selector:
// kernels/estimate_lse.cuh and kernels/twostage_select.cuh. No host sync anywhere: output
// shapes come from the arguments, so a CUDA graph captures these launches.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/estimate_lse.cuh"
#include "kernels/estimate_lse_mma.cuh"
#include "kernels/twostage_select.cuh"
#include "launch.h"
#include "ops.h"

namespace tinyserve {

namespace {
bool g_lse_mma = true;
int g_lse_max_ppw = 32;   // set_lse_pages_per_warp: the most candidate pages a warp takes

// One estimate kernel: on tensor cores (MMA) or CUDA cores; both take the same grid.
template <bool MMA, typename T, int BITS, int D, int G>
void launch_one(dim3 grid, int smem, cudaStream_t stream, const PageEstimateParams& p, int ppw) {
  if constexpr (MMA) estimate_lse_mma_kernel<T, BITS, D, G><<<grid, kMmaLseWarps * 32, smem, stream>>>(p, ppw);
  else estimate_lse_kernel<T, BITS, D, G><<<grid, kLseWarps * 32, smem, stream>>>(p, ppw);
}

template <bool MMA, typename T, int BITS, int D>
void launch_lse(int gmax, dim3 grid, int smem, cudaStream_t stream, const PageEstimateParams& p, int ppw) {
  switch (gmax) {
    case 1: launch_one<MMA, T, BITS, D, 1>(grid, smem, stream, p, ppw); break;
    case 2: launch_one<MMA, T, BITS, D, 2>(grid, smem, stream, p, ppw); break;
    case 4: launch_one<MMA, T, BITS, D, 4>(grid, smem, stream, p, ppw); break;
    default: launch_one<MMA, T, BITS, D, 8>(grid, smem, stream, p, ppw); break;
  }
}

template <bool MMA, typename T>
void launch_lse_typed(int bits, int D, int gmax, dim3 grid, int smem, cudaStream_t stream,
                      const PageEstimateParams& p, int ppw) {
  if (bits == 8 && D == 64) launch_lse<MMA, T, 8, 64>(gmax, grid, smem, stream, p, ppw);
  else if (bits == 8) launch_lse<MMA, T, 8, 128>(gmax, grid, smem, stream, p, ppw);
  else if (D == 64) launch_lse<MMA, T, 4, 64>(gmax, grid, smem, stream, p, ppw);
  else launch_lse<MMA, T, 4, 128>(gmax, grid, smem, stream, p, ppw);
}

// The tensor-core estimate on sm_80+ unless set_lse_mma(False) asks for the CUDA-core one
// (the only one before Ampere; kept switchable for A/B runs and tests).
bool use_lse_mma(int device) { return g_lse_mma && cc_major(device) >= 8; }

void check_index(const torch::Tensor& t, const char* name) {
  TS_CHECK_CUDA(t);
  TS_CHECK_CONTIG(t);
  TORCH_CHECK(t.scalar_type() == torch::kInt32, name, " must be int32");
}
}  // namespace

torch::Tensor estimate_page_lse(const torch::Tensor& query, const torch::Tensor& qkeys, const torch::Tensor& meta,
                                const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                                const torch::Tensor& candidates, double scale, int64_t bits) {
  for (const torch::Tensor* t : {&query, &qkeys, &meta}) {
    TORCH_CHECK(t->is_cuda() && t->is_contiguous(), "query, qkeys and meta must be contiguous CUDA tensors");
  }
  check_index(block_tables, "block_tables"), check_index(seq_lens, "seq_lens"), check_index(candidates, "candidates");
  TORCH_CHECK(query.scalar_type() == torch::kFloat32 && query.dim() == 3, "query must be float32 [B,Hq,D]");
  TORCH_CHECK(qkeys.scalar_type() == torch::kUInt8 && qkeys.dim() == 4, "qkeys must be uint8 [NB,BS,Hkv,Dq]");
  TORCH_CHECK(meta.scalar_type() == torch::kHalf || meta.scalar_type() == torch::kBFloat16, "meta must be fp16/bf16");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2);
  const int Hkv = qkeys.size(2), BS = qkeys.size(1), C = candidates.size(2);
  TORCH_CHECK(bits == 8 || bits == 4, "bits must be 8 or 4");
  TORCH_CHECK(D == 64 || D == 128, "head_dim must be 64 or 128");
  TORCH_CHECK(qkeys.size(3) * 8 == D * bits && meta.size(3) == D && meta.size(2) == Hkv, "qkeys/meta shapes");
  TORCH_CHECK(Hq % Hkv == 0 && Hq / Hkv <= 8, "1..8 query heads per kv-head");
  TORCH_CHECK(candidates.size(0) == B && candidates.size(1) == Hkv, "candidates must be [B, Hkv, C]");
  auto out = torch::empty({B, Hq, C}, query.options());
  if (B == 0 || C == 0) return out;
  const c10::cuda::CUDAGuard guard(query.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int G = Hq / Hkv, gmax = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
  const PageEstimateParams p{query.data_ptr<float>(), qkeys.data_ptr<uint8_t>(), meta.data_ptr(),
                             block_tables.data_ptr<int>(), seq_lens.data_ptr<int>(), candidates.data_ptr<int>(),
                             out.data_ptr<float>(), Hq, Hkv, G, D, BS, (int)block_tables.size(1), C,
                             (float)scale};
  // Pages per warp: as many as leave at least two waves of 4 CTAs per SM. A CTA's prologue
  // (the group's queries, then candidate -> block -> first page: three dependent reads) is
  // paid once for all of its pages: 4 -> 32 pages a warp took 341 -> 308 us (H200, 64 x 32K).
  const int sms = sm_count(query.get_device());
  const int64_t warps_needed = (int64_t)B * Hkv * C;
  int ppw = g_lse_max_ppw;
  while (ppw > 1 && warps_needed / (kLseWarps * ppw) < 8 * sms) ppw >>= 1;
  const dim3 grid(ceil_div(C, kLseWarps * ppw), Hkv, B);
  static_assert(kLseWarps == kMmaLseWarps, "one grid for both estimate kernels");
  const bool half = meta.scalar_type() == torch::kHalf;
  if (use_lse_mma(query.get_device())) {
    const int smem = estimate_mma_smem_bytes(D, (int)bits, 2);   // fp16 or bf16 bounds
    if (half) launch_lse_typed<true, __half>(bits, D, gmax, grid, smem, stream, p, ppw);
    else launch_lse_typed<true, __nv_bfloat16>(bits, D, gmax, grid, smem, stream, p, ppw);
  } else {
    const int smem = estimate_lse_smem_bytes(G, D);
    if (half) launch_lse_typed<false, __half>(bits, D, gmax, grid, smem, stream, p, ppw);
    else launch_lse_typed<false, __nv_bfloat16>(bits, D, gmax, grid, smem, stream, p, ppw);
  }
  TS_LAUNCH_CHECK();
  return out;
}

namespace {
TwoStageSelectParams select_params(const torch::Tensor& values, const torch::Tensor& seq_lens,
                                   const torch::Tensor& budget, int heads, int group, int items, int width,
                                   int64_t block_size, int64_t sink_pages, double top_p) {
  TS_CHECK_CUDA(values);
  TS_CHECK_CONTIG(values);
  check_index(seq_lens, "seq_lens");
  TS_CHECK_CONTIG(budget);
  TORCH_CHECK(values.scalar_type() == torch::kFloat32 && values.dim() == 3, "values must be float32 [B, H, N]");
  TORCH_CHECK(budget.scalar_type() == torch::kInt64 && budget.numel() == values.size(0), "budget must be int64 [B]");
  TORCH_CHECK(seq_lens.numel() == values.size(0), "seq_lens must be [B]");
  TORCH_CHECK(items <= kMaxSelectItems, "at most ", kMaxSelectItems, " items per row");
  TwoStageSelectParams p{};
  p.values = values.data_ptr<float>();
  p.seq_lens = seq_lens.data_ptr<int>();
  p.budget = budget.data_ptr<int64_t>();
  p.num_heads = heads, p.group = group, p.num_items = items, p.out_width = width;
  p.block_size = (int)block_size, p.sink_pages = (int)sink_pages;
  p.top_p = (float)top_p;
  return p;
}

template <int STAGE>
void launch_select(const TwoStageSelectParams& p, int rows, const torch::Tensor& like) {
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(like.device());
  const int smem = select_smem_bytes(p.num_items);
  // raised straight to the largest row's need, so no later shape has to raise it again
  allow_smem<twostage_select_kernel<STAGE>>(smem, select_smem_bytes(kMaxSelectItems));
  twostage_select_kernel<STAGE><<<rows, kSelectThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(p);
  TS_LAUNCH_CHECK();
}
}  // namespace

torch::Tensor twostage_candidates(const torch::Tensor& scores, const torch::Tensor& seq_lens,
                                  const torch::Tensor& budget, int64_t block_size, double multiple, double top_p,
                                  int64_t sink_pages, int64_t width) {
  const int B = scores.size(0), H = scores.size(1), M = scores.size(2);
  auto out = torch::empty({B, H, width}, scores.options().dtype(torch::kInt32));
  TwoStageSelectParams p = select_params(scores, seq_lens, budget, H, 1, M, (int)width, block_size, sink_pages, top_p);
  p.out = out.data_ptr<int>();
  p.multiple = multiple;
  launch_select<1>(p, B * H, scores);
  return out;
}

std::vector<torch::Tensor> twostage_keep(const torch::Tensor& lse, const torch::Tensor& candidates,
                                         const torch::Tensor& seq_lens, const torch::Tensor& budget,
                                         int64_t block_size, double top_p, int64_t sink_pages, int64_t width) {
  check_index(candidates, "candidates");
  const int B = candidates.size(0), H = candidates.size(1), C = candidates.size(2);
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == B && lse.size(2) == C && lse.size(1) % H == 0,
              "lse must be [B, H * group, C]");
  auto out = torch::empty({B, H, width}, candidates.options());
  auto kept = torch::empty({B, H}, candidates.options().dtype(torch::kInt64));
  TwoStageSelectParams p = select_params(lse, seq_lens, budget, H, (int)(lse.size(1) / H), C, (int)width,
                                         block_size, sink_pages, top_p);
  p.ids = candidates.data_ptr<int>();
  p.out = out.data_ptr<int>();
  p.kept = kept.data_ptr<int64_t>();
  launch_select<2>(p, B * H, lse);
  return {out, kept};
}

void set_lse_mma(bool enabled) { g_lse_mma = enabled; }

void set_lse_pages_per_warp(int64_t most) {
  TORCH_CHECK(most >= 1 && most <= 32, "pages per warp must be in 1..32 (a lane resolves each)");
  g_lse_max_ppw = (int)most;
}

}  // namespace tinyserve
