// The scene's bake frame on the GPU: kernels/scene_frame.cuh's per-ray loop, one thread
// per ray, and kernels/scene_splat.cuh's start splat, one thread per surface cell, launched
// on the caller's stream (torch's current stream, passed as a handle).
// A plain C ABI library loaded with ctypes (tinyserve_core/scene/native.py), as the CPU
// build of the same header: the scene stands apart from the serving kernels' extension,
// and without torch headers this builds in seconds on first use.
#include <cuda_runtime.h>

#include "kernels/scene_frame.cuh"
#include "kernels/scene_splat.cuh"

using tinyserve::scene::FrameParams;
using tinyserve::scene::SplatParams;

namespace {

// Runs launch() with `device` current and gives the caller's current device back: the
// thread's current context is the driver's, which torch's runtime reads too, so leaving
// `device` current would move torch's current device under it (a bake on cuda:1 drawn
// while cuda:0 is current). Returns the launch's error code (0: launched).
template <class Launch>
int on_device(int device, Launch launch) {
  int before = device;
  cudaError_t err = cudaGetDevice(&before);
  if (err != cudaSuccess) return (int)err;
  if (before != device && (err = cudaSetDevice(device)) != cudaSuccess) return (int)err;
  launch();
  err = cudaGetLastError();
  if (before != device) {
    const cudaError_t back = cudaSetDevice(before);
    if (err == cudaSuccess) err = back;
  }
  return (int)err;
}

}  // namespace

extern "C" {

int scene_frame_params_size() { return (int)sizeof(FrameParams); }
int scene_splat_params_size() { return (int)sizeof(SplatParams); }

// The params are copied into the launch, so the host struct may go once this returns.
int scene_frame_render(const FrameParams* p, void* stream, int device) {
  if (p->n <= 0) return 0;
  return on_device(device, [&] {
    const int threads = 128;
    const unsigned blocks = (unsigned)((p->n + threads - 1) / threads);
    tinyserve::scene::scene_frame_kernel<<<blocks, threads, 0, (cudaStream_t)stream>>>(*p);
  });
}

// StartSplat's per-block minimum starts into s->blocks (which the caller fills with +inf),
// *straddles (device memory, zeroed by the caller) set to 1 where a cell straddles the
// camera's plane within the view.
int scene_splat_blocks(const SplatParams* s, int* straddles, void* stream, int device) {
  if (s->k <= 0) return 0;
  return on_device(device, [&] {
    const int threads = 256;
    const unsigned blocks = (unsigned)((s->k + threads - 1) / threads);
    tinyserve::scene::scene_splat_kernel<<<blocks, threads, 0, (cudaStream_t)stream>>>(*s, straddles);
  });
}

const char* scene_frame_error(int code) { return cudaGetErrorString((cudaError_t)code); }

}  // extern "C"
