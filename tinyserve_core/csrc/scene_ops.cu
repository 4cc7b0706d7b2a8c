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
// host struct may go once this returns. `device`: the tensors' GPU, made current for the
// launch and the caller's current device restored after it: the thread's current context
// is the driver's, which torch's runtime reads too, so leaving `device` current would move
// torch's current device under it (a bake on cuda:1 drawn while cuda:0 is current).
int scene_frame_render(const FrameParams* p, void* stream, int device) {
  if (p->n <= 0) return 0;
  int before = device;
  cudaError_t err = cudaGetDevice(&before);
  if (err != cudaSuccess) return (int)err;
  if (before != device && (err = cudaSetDevice(device)) != cudaSuccess) return (int)err;
  const int threads = 128;
  const unsigned blocks = (unsigned)((p->n + threads - 1) / threads);
  tinyserve::scene::scene_frame_kernel<<<blocks, threads, 0, (cudaStream_t)stream>>>(*p);
  err = cudaGetLastError();
  if (before != device) {
    const cudaError_t back = cudaSetDevice(before);
    if (err == cudaSuccess) err = back;
  }
  return (int)err;
}

const char* scene_frame_error(int code) { return cudaGetErrorString((cudaError_t)code); }

}  // extern "C"
