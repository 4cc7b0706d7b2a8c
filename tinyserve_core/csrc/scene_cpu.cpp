// The scene's bake frame on the CPU: the per-ray loop of kernels/scene_frame.cuh over a
// frame's rays on one thread, in pixel order (neighbouring rays read neighbouring cells,
// so the tables stay in cache). Built with the system C++ compiler on first use and
// loaded with ctypes (tinyserve_core/scene/native.py); no torch headers.
#include "kernels/scene_frame.cuh"

using tinyserve::scene::FrameParams;

extern "C" {

int scene_frame_params_size() { return (int)sizeof(FrameParams); }

int scene_frame_render(const FrameParams* p) {
  for (int64_t i = 0; i < p->n; ++i) tinyserve::scene::render_ray(*p, i);
  return 0;
}

}  // extern "C"
