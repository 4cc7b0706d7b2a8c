// The kernel parameter blocks of paged decode and page scoring, filled from the op's
// tensors; shared by the separate ops (attention_ops.cu) and the one-launch sparse decode
// (sparse_ops.cu). The callers have checked shapes, dtypes and devices.
#pragma once

#include <torch/extension.h>

#include <cmath>

#include "kernels/page_scores.cuh"
#include "kernels/paged_attention.cuh"

namespace tinyserve {

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
