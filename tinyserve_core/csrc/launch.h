// Launch helpers shared by the op files: device attributes, and programmatic dependent
// launch (PDL, sm_90+).
//
// A decode step is a chain of short dependent kernels, captured into a CUDA graph. Even
// in a graph each kernel boundary costs ~3 us on an H200 (the next grid is scheduled only
// once the previous one has drained): at batch 1 that was 0.15-0.24 ms of a 0.8 ms step.
// With PDL the next grid is scheduled as soon as every CTA of the previous one has called
// allow_dependents() (kernels/common.cuh), and waits in wait_prior_grid() until that grid
// has completed and its writes are visible; so every kernel launched here must call
// wait_prior_grid() before its first global access. Stream capture records the launch
// attribute as a programmatic edge of the graph (CUDA 12.3+).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ops.h"

namespace tinyserve {

// An attribute of the current device, read once (the process drives one GPU).
inline int device_attr(cudaDeviceAttr attr) {
  int dev = 0, v = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, dev));
  return v;
}

inline int sm_count() {
  static const int n = device_attr(cudaDevAttrMultiProcessorCount);
  return n;
}

inline bool g_pdl = true;  // set_pdl(False) turns programmatic dependent launch off (bench A/B)

inline bool pdl_supported() {
  static const int major = device_attr(cudaDevAttrComputeCapabilityMajor);
  return g_pdl && major >= 9;
}

// `launch(T{})` with the CUDA element type of `t`: fp32, fp16 or bf16.
template <typename F>
void for_element_type(const torch::Tensor& t, const char* op, F&& launch) {
  switch (t.scalar_type()) {
    case at::kFloat: launch(float{}); break;
    case at::kHalf: launch(__half{}); break;
    case at::kBFloat16: launch(__nv_bfloat16{}); break;
    default: TORCH_CHECK(false, op, ": no kernel for ", t.scalar_type());
  }
  TS_LAUNCH_CHECK();
}

// Launches a kernel that calls wait_prior_grid() first, with PDL where supported.
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kern)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_supported() ? 1 : 0;
  TS_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kern, args...));
}

}  // namespace tinyserve
