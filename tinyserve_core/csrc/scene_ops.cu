// The scene's bake frame on the GPU: kernels/scene_frame.cuh's per-ray loop, one thread
// per ray, launched on the caller's stream (torch's current stream, passed as a handle).
// A plain C ABI library loaded with ctypes (tinyserve_core/scene/native.py), as the CPU
// build of the same header: the scene stands apart from the serving kernels' extension,
// and without torch headers this builds in seconds on first use.
#include <cuda_runtime.h>

#include "kernels/scene_frame.cuh"

using tinyserve::scene::FrameParams;

extern "C" {

int scene_frame_params_size() { return (int)sizeof(FrameParams); }

// The launch's error code (0: launched); the params are copied into the launch, so the
// host struct may go once this returns. `device`: the tensors' GPU (this library's runtime
// keeps its own current device, not torch's).
int scene_frame_render(const FrameParams* p, void* stream, int device) {
  if (p->n <= 0) return 0;
  const cudaError_t set = cudaSetDevice(device);
  if (set != cudaSuccess) return (int)set;
  const int threads = 128;
  const unsigned blocks = (unsigned)((p->n + threads - 1) / threads);
  tinyserve::scene::scene_frame_kernel<<<blocks, threads, 0, (cudaStream_t)stream>>>(*p);
  return (int)cudaGetLastError();
}

const char* scene_frame_error(int code) { return cudaGetErrorString((cudaError_t)code); }

}  // extern "C"
