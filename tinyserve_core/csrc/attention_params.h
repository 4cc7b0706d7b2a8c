// The kernel parameter blocks of paged decode and page scoring, filled from the op's
// tensors; shared by the separate ops (attention_ops.cu) and the one-launch sparse decode
// (sparse_ops.cu). The callers have checked shapes, dtypes and devices.
#pragma once

#include <torch/extension.h>

#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "launch.h"

#include "kernels/page_scores.cuh"
#include "kernels/paged_attention.cuh"

namespace tinyserve {

// Per-row counters the kernels' in-launch split merges keep between calls: per device, zeroed
// once when first needed, and left at zero by every launch that uses them (the row's last
// CTA resets its count), so a launch needs no memset node before it. Regions: 0 and 1 for
// the one-launch sparse decode (chunks scored, splits done), 2 for paged decode's merge.
// One set per device: two launches running at once on two streams of one device would
// share them (the engine runs one stream). The first call must come outside CUDA-graph
// capture (a capture would record the zeroing instead of doing it): nullptr then.
constexpr int kCounterRows = 4096;  // rows (sequence x kv-head) a region serves
constexpr int kCounterRegions = 3;

inline int* row_counters(int region, cudaStream_t stream) {
  static std::mutex mu;
  static auto* bufs = new std::vector<torch::Tensor>(device_count());  // never freed: outlives the CUDA context
  const int dev = current_device();
  const std::lock_guard<std::mutex> lock(mu);
  torch::Tensor& t = (*bufs)[dev];
  if (!t.defined()) {
    cudaStreamCaptureStatus status;
    TS_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
    if (status != cudaStreamCaptureStatusNone) return nullptr;
    t = torch::zeros({kCounterRegions * kCounterRows}, torch::TensorOptions().dtype(torch::kInt32).device(torch::kCUDA, dev));
    TS_CUDA_CHECK(cudaStreamSynchronize(c10::cuda::getCurrentCUDAStream(dev)));
  }
  return t.data_ptr<int>() + (int64_t)region * kCounterRows;
}

// Dense decode over the whole block table (the caller sets the selection and the splits).
inline DecodeParams decode_params(const torch::Tensor& query, const torch::Tensor& k_cache,
                                  const torch::Tensor& v_cache, const torch::Tensor& block_tables,
                                  const torch::Tensor& seq_lens, double scale, torch::Tensor& out,
                                  int l2_prefetch) {
  DecodeParams p{};
  const int Hq = query.size(1), BS = k_cache.size(1), Hkv = k_cache.size(2);
  p.q = query.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.block_tables = block_tables.data_ptr<int>();
  p.seq_lens = seq_lens.data_ptr<int>();
  p.out = out.data_ptr();
  p.num_q_heads = Hq;
  p.num_kv_heads = Hkv;
  p.group = Hq / Hkv;
  p.block_size = BS;
  p.block_shift = (BS & (BS - 1)) == 0 ? __builtin_ctz(BS) : -1;
  p.bt_stride = block_tables.size(1);
  p.scale_log2 = float(scale * M_LOG2E);
  p.l2_prefetch = l2_prefetch;
  return p;
}

// Page bounds of every page of the block table into `out` [B, Hkv, M] (float32), with
// `pages_per_cta` pages per CTA (or per chunk).
inline PageScoreParams page_score_params(const torch::Tensor& query, const torch::Tensor& meta,
                                         const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                                         double scale, int block_size, int pages_per_cta, torch::Tensor& out) {
  PageScoreParams p{};
  const int Hq = query.size(1), D = query.size(2), Hkv = meta.size(2), M = block_tables.size(1);
  p.q = query.data_ptr();
  p.meta = meta.data_ptr();
  p.block_tables = block_tables.data_ptr<int>();
  p.seq_lens = seq_lens.data_ptr<int>();
  p.out = out.data_ptr<float>();
  p.num_q_heads = Hq;
  p.num_kv_heads = Hkv;
  p.group = Hq / Hkv;
  p.head_dim = D;
  p.block_size = block_size;
  p.bt_stride = M;
  p.max_blocks = M;
  p.pages_per_cta = pages_per_cta;
  // the scale rounded down and up to float (PageScoreParams: the bound stays exact)
  p.scale_lo = p.scale_hi = (float)scale;
  if ((double)p.scale_hi < scale) p.scale_hi = std::nextafter(p.scale_hi, INFINITY);
  if ((double)p.scale_lo > scale) p.scale_lo = std::nextafter(p.scale_lo, 0.f);
  return p;
}

}  // namespace tinyserve
