// The splatted start distances of scene/splat.py's StartSplat, one surface cell at a time,
// compiled for the CPU (scene_cpu.cpp: a loop over the cells, a plain minimum per block)
// and the GPU (scene_ops.cu: a thread per cell, an atomic minimum per block). The torch
// splat is the reference: the same float32 arithmetic, cell by cell (the torch splat's
// matrix product and sums round a little differently: the starts agree to an ulp).
#pragma once

#include <math.h>
#include <stdint.h>

#include "scene_frame.cuh"

namespace tinyserve {
namespace scene {

// scene/native_splat.py SplatParams, field for field: StartSplat's surface cells as planes
// and one camera.
struct SplatParams {
  const float* centres;   // [3, K] world centres
  const uint8_t* faces;   // [6, K] open faces -x, +x, -y, +y, -z, +z
  int64_t k;
  // the torch splat's constants, rounded to float32 from the same double arithmetic:
  // half a voxel, the open-face margin, the cell's bounding sphere radius, its square and
  // the camera-plane margin (1.01 r), the view's half-width and half-height over the
  // focal length, the pixel-centre offsets of a box's first and last column and row
  float half, edge, radius, radius2, plane;
  float tan_x, tan_y, x_lo, x_hi, y_lo, y_hi;
  float eye[3], rot[9];   // camera-to-world, rotation row-major
  float focal;
  int32_t width, height, block;
  float* blocks;          // [ceil(H / block) * ceil(W / block)] minimum start per block
  float* start;           // [H * W] out (the CPU's; the GPU expands the blocks with torch)
};

// A cell's blocks (inclusive) and its start distance.
struct CellBox {
  int i0, i1, j0, j1;
  float start;
};

enum SplatCell { kUnseen = 0, kBox = 1, kStraddles = 2 };

// Products and sums rounded one at a time, as the torch splat's separate operations: nvcc
// would fuse a * b + c into one rounding, and a box bound an ulp off can add or drop a
// block at a box's edge (the ISO C++ host build does not contract them).
SCENE_HD float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SCENE_HD float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Cell i: kUnseen (no open face toward the eye, behind it, or out of view), kBox (box
// holds the blocks its bounding sphere covers and its start) or kStraddles (it straddles
// the camera's plane within the view: no bounded projection, the frame is traced).
SCENE_HD int splat_cell(const SplatParams& s, int64_t i, CellBox& box) {
  const float r = s.radius, edge = s.edge;
  const int b = s.block, wb = (s.width + b - 1) / b, hb = (s.height + b - 1) / b;
  float rel[3];
  bool seen = false;
  for (int a = 0; a < 3; ++a) {
    rel[a] = s.centres[a * s.k + i] - s.eye[a];
    seen |= (s.faces[2 * a * s.k + i] && rel[a] > edge) || (s.faces[(2 * a + 1) * s.k + i] && rel[a] < -edge);
  }
  if (!seen) return kUnseen;
  // camera frame: x right, y up, z forward (R^T rel, negated z)
  float cam[3];
  for (int j = 0; j < 3; ++j) cam[j] = add(add(mul(s.rot[j], rel[0]), mul(s.rot[3 + j], rel[1])), mul(s.rot[6 + j], rel[2]));
  const float x = cam[0], y = cam[1];
  float z = -cam[2];
  if (fabsf(z) <= s.plane) {
    const float reach = fabsf(z) + r;
    if (fabsf(x) - r <= reach * s.tan_x + 1e-6f && fabsf(y) - r <= reach * s.tan_y + 1e-6f) return kStraddles;
    return kUnseen;  // across the plane, out of view
  }
  if (!(z > s.plane)) return kUnseen;  // behind the eye
  float g2 = 0.0f;
  for (int a = 0; a < 3; ++a) {
    const float g = mx(fabsf(rel[a]) - s.half, 0.0f);
    g2 = add(g2, mul(g, g));
  }
  box.start = sqrtf(g2);
  z = mx(z, 2.0f * r);
  const float zz = add(mul(z, z), -s.radius2), k = s.focal / zz;
  const float sx = mul(sqrtf(add(mul(x, x), zz)), r), sy = mul(sqrtf(add(mul(y, y), zz)), r);
  const float xz = mul(x, z), yz = mul(y, z);
  box.i0 = (int)mx(floorf(ceilf(add(mul(xz - sx, k), s.x_lo)) / (float)b), 0.0f);
  box.i1 = (int)mn(floorf(add(mul(xz + sx, k), s.x_hi) / (float)b), (float)(wb - 1));
  box.j0 = (int)mx(floorf(ceilf(add(mul(-yz - sy, k), s.y_lo)) / (float)b), 0.0f);
  box.j1 = (int)mn(floorf(add(mul(-yz + sy, k), s.y_hi) / (float)b), (float)(hb - 1));
  return kBox;
}

#ifdef __CUDACC__
// A thread per cell; blocks start at +inf and take the smallest start of the cells whose
// box covers them as an integer minimum (starts are >= 0, and non-negative floats order
// as their bit patterns). *straddles is set when any cell straddles the camera's plane.
__global__ void __launch_bounds__(256) scene_splat_kernel(const __grid_constant__ SplatParams s, int* straddles) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= s.k) return;
  CellBox box;
  const int kind = splat_cell(s, i, box);
  if (kind == kStraddles) {
    *straddles = 1;
    return;
  }
  if (kind != kBox) return;
  const int wb = (s.width + s.block - 1) / s.block;
  const int bits = __float_as_int(box.start);
  for (int bj = box.j0; bj <= box.j1; ++bj)
    for (int bi = box.i0; bi <= box.i1; ++bi) atomicMin(reinterpret_cast<int*>(s.blocks) + (int64_t)bj * wb + bi, bits);
}
#endif

}  // namespace scene
}  // namespace tinyserve
