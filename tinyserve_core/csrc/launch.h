// Launch helpers shared by the op files: cached device attributes, the dynamic shared-memory
// cap, and programmatic dependent launch (PDL, sm_90+).
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

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>

#include "ops.h"

namespace tinyserve {

// The attributes the launches need, read once per device index (the first call for a
// device reads them; call_once makes concurrent first calls safe).
struct DeviceAttrs {
  int sm_count = 0;
  int cc_major = 0;    // compute capability, major
  int smem_optin = 0;  // opt-in dynamic + static shared memory per block, bytes
};

inline int current_device() {
  int dev = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

inline int device_count() {
  static const int count = [] {
    int n = 0;
    TS_CUDA_CHECK(cudaGetDeviceCount(&n));
    return n;
  }();
  return count;
}

inline const DeviceAttrs& device_attrs(int device) {
  const int count = device_count();
  static const std::unique_ptr<std::once_flag[]> once(new std::once_flag[count]);
  static const std::unique_ptr<DeviceAttrs[]> attrs(new DeviceAttrs[count]);
  TORCH_CHECK(device >= 0 && device < count, "no CUDA device ", device);
  std::call_once(once[device], [device] {
    DeviceAttrs& a = attrs[device];
    TS_CUDA_CHECK(cudaDeviceGetAttribute(&a.sm_count, cudaDevAttrMultiProcessorCount, device));
    TS_CUDA_CHECK(cudaDeviceGetAttribute(&a.cc_major, cudaDevAttrComputeCapabilityMajor, device));
    TS_CUDA_CHECK(cudaDeviceGetAttribute(&a.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  });
  return attrs[device];
}

// Of `device`, or without an argument of the current device (the caller's CUDAGuard).
inline int sm_count(int device = current_device()) { return device_attrs(device).sm_count; }
inline int cc_major(int device = current_device()) { return device_attrs(device).cc_major; }
inline int smem_optin(int device = current_device()) { return device_attrs(device).smem_optin; }

inline bool g_pdl = true;  // set_pdl(False) turns programmatic dependent launch off (bench A/B)

inline bool pdl_supported() { return g_pdl && cc_major() >= 9; }

// Lets `Kernel` launch with `bytes` of dynamic shared memory on the current device (the
// caller's CUDAGuard): raises its cap (a host-side function attribute, not a stream op, so
// also fine while a graph is being captured) when `bytes` exceeds it, to max(bytes,
// raise_to) (callers whose largest need is known raise once to it). The starting cap is
// the kernel's own (48 KB less its static shared memory), so kernels with static arrays
// are covered too. The attribute belongs to the kernel in one device's context, so the cap
// raised so far is kept per kernel instance and device: a process driving two GPUs raises
// it on each (one cap for the process would skip the raise on the second GPU, whose launch
// then fails; page_scores, which set the attribute on every call, had no such cache).
template <auto Kernel>
void allow_smem(size_t bytes, size_t raise_to = 0) {
  struct Cap {
    std::once_flag read;
    std::atomic<size_t> allowed{0};
    std::mutex raising;
  };
  const int count = device_count();
  static const std::unique_ptr<Cap[]> caps(new Cap[count]);
  const int device = current_device();
  TORCH_CHECK(device >= 0 && device < count, "no CUDA device ", device);
  Cap& cap = caps[device];
  std::call_once(cap.read, [&cap] {  // under the current device: this device's attributes
    cudaFuncAttributes a{};
    TS_CUDA_CHECK(cudaFuncGetAttributes(&a, Kernel));
    cap.allowed.store((size_t)a.maxDynamicSharedSizeBytes, std::memory_order_release);
  });
  if (bytes <= cap.allowed.load(std::memory_order_acquire)) return;
  const std::lock_guard<std::mutex> lock(cap.raising);
  if (bytes <= cap.allowed.load(std::memory_order_relaxed)) return;
  const size_t to = std::max(bytes, raise_to);
  TS_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)to));
  cap.allowed.store(to, std::memory_order_release);
}

// CTAs of `Kernel` one SM holds at `threads` threads and `smem` bytes of dynamic shared
// memory (0: it does not fit), its cap raised first. Read once per kernel instance: the split
// and grid plans ask on every launch, each instance has one launch shape, and the GPUs of a
// process are alike.
template <auto Kernel>
int resident_ctas(int threads, size_t smem) {
  static const int n = [threads, smem] {
    allow_smem<Kernel>(smem);
    int v = 0;
    TS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, Kernel, threads, smem));
    return v;
  }();
  return n;
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
