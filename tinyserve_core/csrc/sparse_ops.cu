// Glue for the fused sparse decode (kernels/fused_sparse.cuh): checks, the cluster plan,
// the launch (thread-block clusters + programmatic dependent launch).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "kernels/fused_sparse.cuh"
#include "ops.h"

namespace tinyserve {
namespace {

// Per-device policy (kernels/tuning.py hands it the device's row): the fused path serves
// batches up to fused_max_batch; each row's cluster is at most max_cluster CTAs.
struct SparseTuning {
  int fused_max_batch = 16;
  int max_cluster = 16;
};
SparseTuning g_sparse;

int device_attr(cudaDeviceAttr attr) {
  int dev = 0, v = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, dev));
  return v;
}

// Launches the fused kernel for row clusters of `cluster` CTAs, halving the cluster while
// the GPU cannot co-schedule one (cudaOccupancyMaxActiveClusters == 0); the result does not
// depend on the cluster size. With programmatic dependent launch where it is on; a launch
// refused with both attributes is retried without it.
template <typename T, int D>
void launch_fused(FusedSparseParams& f, int cluster, int max_blocks, int hkv, int batch, cudaStream_t stream) {
  auto kern = fused_sparse_decode_kernel<T, D>;
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.blockDim = dim3(kDecodeWarps * 32);
  cfg.stream = stream;
  cfg.attrs = attr;
  // The attributes and the co-scheduling answers are kept per instance (host calls cost
  // microseconds; a decode step launches this once per layer).
  static int smem_set = 0;
  static bool non_portable = false;
  static std::map<std::pair<int, int>, bool> fits_cache;  // (cluster, smem) -> co-schedulable
  for (int c = cluster;; c /= 2) {
    f.slice_cap = std::max(1, (max_blocks + c - 1) / c);
    f.sel_cap = std::max(1, (std::min(f.k, max_blocks) + c - 1) / c);
    const int smem = fused_smem_bytes<D>(f.slice_cap, f.sel_cap);
    cfg.dynamicSmemBytes = smem;
    cfg.gridDim = dim3(c, hkv, batch);
    attr[0].val.clusterDim.x = c;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.numAttrs = 1;
    if (smem > smem_set) {
      TS_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      smem_set = smem;
    }
    if (c > 8 && !non_portable) {
      TS_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
      non_portable = true;
    }
    if (c == 1) break;
    auto known = fits_cache.find({c, smem});
    if (known == fits_cache.end()) {
      int fits = 0;
      const bool ok = cudaOccupancyMaxActiveClusters(&fits, kern, &cfg) == cudaSuccess && fits > 0;
      (void)cudaGetLastError();  // a refused query leaves its error behind
      known = fits_cache.emplace(std::make_pair(c, smem), ok).first;
    }
    if (known->second) break;
  }
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  TS_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
  if (pdl_enabled() && capturing == cudaStreamCaptureStatusNone) {
    cfg.numAttrs = 2;
    if (cudaLaunchKernelEx(&cfg, kern, f) == cudaSuccess) return;
    (void)cudaGetLastError();
    cfg.numAttrs = 1;
  }
  TS_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kern, f));
}

}  // namespace

void set_sparse_tuning(int64_t fused_max_batch, int64_t max_cluster) {
  TORCH_CHECK(fused_max_batch >= 0 && max_cluster >= 1 && max_cluster <= kFusedMaxCluster,
              "set_sparse_tuning: fused_max_batch >= 0, max_cluster in 1..", kFusedMaxCluster);
  g_sparse = SparseTuning{(int)fused_max_batch, (int)max_cluster};
}

// The cluster size of the fused path for this shape, 0 when the three-kernel path serves it
// (batch above the device's threshold, rows longer than kFusedMaxPages, before sm_90). The
// cluster is the largest power of two up to max_cluster that keeps the grid within the
// resident CTAs (2 per SM), at least 1: small batches spread each row over many SMs.
// With any_batch the batch threshold is ignored (the benchmark times both paths everywhere).
int64_t sparse_decode_plan(int64_t batch, int64_t num_kv_heads, int64_t max_blocks, bool any_batch) {
  static const int major = device_attr(cudaDevAttrComputeCapabilityMajor);
  static const int sms = device_attr(cudaDevAttrMultiProcessorCount);
  if (major < 9 || max_blocks > kFusedMaxPages || batch < 1) return 0;
  if (batch > g_sparse.fused_max_batch && !any_batch) return 0;
  const int64_t rows = batch * num_kv_heads, slots = 2LL * sms;
  int64_t c = 1;
  while (c * 2 <= g_sparse.max_cluster && rows * c * 2 <= slots) c *= 2;
  return c;
}

std::vector<torch::Tensor> fused_sparse_decode(const torch::Tensor& query, const torch::Tensor& k_cache,
                                               const torch::Tensor& v_cache, const torch::Tensor& meta,
                                               const torch::Tensor& block_tables, const torch::Tensor& seq_lens,
                                               double scale, int64_t k, int64_t cluster) {
  for (const auto* t : {&query, &k_cache, &v_cache, &meta, &block_tables, &seq_lens}) {
    TS_CHECK_CUDA(*t);
    TS_CHECK_CONTIG(*t);
  }
  TORCH_CHECK(query.dim() == 3 && k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes(),
              "query [B,Hq,D], k_cache and v_cache [NB,BS,Hkv,D]");
  TORCH_CHECK(query.scalar_type() == k_cache.scalar_type() && k_cache.scalar_type() == v_cache.scalar_type() &&
                  meta.scalar_type() == k_cache.scalar_type(),
              "query, caches and meta must share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == torch::kInt32 && seq_lens.scalar_type() == torch::kInt32,
              "block_tables and seq_lens must be int32");
  const int B = query.size(0), Hq = query.size(1), D = query.size(2);
  const int BS = k_cache.size(1), Hkv = k_cache.size(2), M = block_tables.size(1);
  TORCH_CHECK(k_cache.size(3) == D && (D == 64 || D == 128), "head_dim must be 64 or 128");
  TORCH_CHECK(meta.dim() == 4 && meta.size(0) == k_cache.size(0) && meta.size(1) == 2 && meta.size(2) == Hkv &&
                  meta.size(3) == D, "meta must be [NB, 2, Hkv, D]");
  TORCH_CHECK(Hq % Hkv == 0 && Hq / Hkv <= kMaxGroup, "query heads per kv-head must be 1..8");
  TORCH_CHECK(block_tables.size(0) == B && seq_lens.size(0) == B, "batch sizes differ");
  TORCH_CHECK(M <= kFusedMaxPages, "fused sparse decode: rows up to ", kFusedMaxPages, " pages");
  TORCH_CHECK(k >= 0 && scale > 0, "k >= 0 and a positive scale");
  TORCH_CHECK(cluster >= 1 && cluster <= kFusedMaxCluster, "cluster must be 1..", kFusedMaxCluster);
  TORCH_CHECK(device_attr(cudaDevAttrComputeCapabilityMajor) >= 9, "fused sparse decode needs sm_90+");
  const bool half = query.scalar_type() == torch::kHalf;
  TORCH_CHECK(half || query.scalar_type() == torch::kBFloat16, "fused sparse decode: fp16 or bf16");
  const c10::cuda::CUDAGuard guard(query.device());
  auto out = torch::empty_like(query);
  auto idx = torch::empty({B, Hkv, k}, block_tables.options());
  if (B == 0 || k == 0) {
    out.zero_();
    idx.fill_(-1);
    return {out, idx};
  }

  FusedSparseParams f{};
  const DecodeParams& p = f.d = make_decode_params(query.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
                                                   block_tables.data_ptr<int>(), seq_lens.data_ptr<int>(),
                                                   out.data_ptr(), Hq, Hkv, BS, M, scale);
  PageScoreParams& s = f.s;
  s.q = query.data_ptr();
  s.meta = meta.data_ptr();
  s.block_tables = p.block_tables;
  s.seq_lens = p.seq_lens;
  s.num_q_heads = Hq;
  s.num_kv_heads = Hkv;
  s.group = Hq / Hkv;
  s.head_dim = D;
  s.block_size = BS;
  s.bt_stride = M;
  s.max_blocks = M;
  s.scale_lo = s.scale_hi = (float)scale;  // rounded away from the bound, as page_scores does
  if ((double)s.scale_hi < scale) s.scale_hi = std::nextafter(s.scale_hi, INFINITY);
  if ((double)s.scale_lo > scale) s.scale_lo = std::nextafter(s.scale_lo, 0.f);
  f.sel_out = idx.data_ptr<int>();
  f.k = (int)k;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int C = (int)cluster;
  if (half) {
    if (D == 64) launch_fused<__half, 64>(f, C, M, Hkv, B, stream);
    else launch_fused<__half, 128>(f, C, M, Hkv, B, stream);
  } else {
    if (D == 64) launch_fused<__nv_bfloat16, 64>(f, C, M, Hkv, B, stream);
    else launch_fused<__nv_bfloat16, 128>(f, C, M, Hkv, B, stream);
  }
  return {out, idx};
}

}  // namespace tinyserve
