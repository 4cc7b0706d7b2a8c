// The scene lab's bake frame as one loop per ray, compiled twice from this one header:
// by nvcc for the GPU (scene_ops.cu, one thread per ray) and by the system C++ compiler
// for the CPU (scene_cpu.cpp, a plain loop over the rays). No torch headers: both
// libraries are plain C ABI shared objects that the scene loads with ctypes
// (tinyserve_core/scene/native.py), so they build in seconds and the scene, which stands
// apart from the serving kernels, needs nothing of theirs.
//
// The reference is the torch frame, tinyserve_core/scene/frames.py `render_cells`: the
// same tables (CellTable, EmptySpace.trace_skip), the same sample positions (windows of
// half-voxel steps from the splatted start, sphere tracing between windows), the same
// density activation (softplus) and compositing weights, the same preview colour rule
// (samples above app_eps, the window's dropped weight shared among them) and classes read
// once at the ray's peak sample. What the torch frame does for throughput only (the
// long last window for the final few rays) is replaced by what it approximates: windows
// and tracing go on until the ray is opaque or leaves the grid.
#pragma once

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define SCENE_HD __host__ __device__ __forceinline__
#define SCENE_PREFETCH(addr) ((void)0)
#else
#define SCENE_HD inline
// CPU only (the GPU build compiles it away): a cache-line hint, no effect on any value.
// On x86 as a volatile asm: g++ 12 -O3 deleted __builtin_prefetch calls of a helper once
// it was inlined (the lookahead below compiled to nothing).
#if defined(__x86_64__) || defined(__i386__)
#define SCENE_PREFETCH(addr) __asm__ volatile("prefetcht0 %0" : : "m"(*(const char*)(addr)))
#else
#define SCENE_PREFETCH(addr) __builtin_prefetch(addr)
#endif
#endif

namespace tinyserve {
namespace scene {

// Mirrored field for field by ctypes (scene/native.py FrameParams); the libraries export
// its size so a mismatch is caught at load time.
struct FrameParams {
  // camera: eye, camera-to-world rotation (row-major), focal length in pixels, image size
  float eye[3];
  float rot[9];
  float focal;
  int32_t width, height;
  // grid box and cells (occupancy shape), the tracer's padded table shape
  float lo[3], hi[3];
  float voxel;
  int32_t cells[3];
  int32_t padded[3];
  int32_t air;           // CellTable's sentinel row (K): an empty cell
  int32_t classes;       // C, the width of a probs row
  int32_t kept_classes;  // M, classes kept per occupied cell
  // march
  float step;
  int32_t first_window, window;  // samples per window: the first from the start, then after tracing
  int32_t max_rounds, max_trace;
  float t_stop, app_eps;
  // light left below which a window stops early (the rest of it could add at most this
  // much weight; the torch frame samples it all and checks t_stop only at its end)
  float t_negligible;
  float background[3];
  // tables (device pointers on the GPU)
  const int32_t* row;            // [cells] occupied cell -> table row, else air
  const float* density;          // [K + 1, 8] raw density of a cell's corners (z, y, x major)
  const float* colour;           // [K + 1, 24] the corners' rgb
  const float* class_corners;    // [K + 1, 8 * M] the corners' kept class probabilities
  const int32_t* class_ids;      // [K + 1, M]
  const float* trace_skip;       // [padded cells] metres free of occupancy from a cell
  // this frame: per-pixel splatted starts [H * W], pixels to cast (null: all, in order)
  const float* start;
  const int64_t* pixels;
  int64_t n;
  float* rgb;    // [n, 3]
  float* depth;  // [n]
  float* acc;    // [n]
  float* probs;  // [n, C]
};

// Plain minimum and maximum: fminf / fmaxf carry NaN rules that keep g++ from inlining
// them (a library call each, six per sample), and no value here is NaN.
SCENE_HD float mn(float a, float b) { return a < b ? a : b; }
SCENE_HD float mx(float a, float b) { return a > b ? a : b; }

// e^x to about 2e-7 relative for x in [-87, 88] (0 below), inline on both compilers:
// glibc's expf and log1pf were a third of a CPU frame as calls. Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2 / 2, a degree-6 Taylor polynomial, 2^n through the exponent.
SCENE_HD float fast_exp(float x) {
  if (x < -87.0f) return 0.0f;
  x = mn(x, 88.0f);
  const float n = floorf(x * 1.44269504f + 0.5f);
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float q = 1.0f / 720.0f;
  q = q * r + 1.0f / 120.0f;
  q = q * r + 1.0f / 24.0f;
  q = q * r + 1.0f / 6.0f;
  q = q * r + 0.5f;
  q = q * r + 1.0f;
  q = q * r + 1.0f;
  union { int32_t i; float f; } scale;
  scale.i = ((int32_t)n + 127) << 23;
  return q * scale.f;
}

// exp(-s * softplus(raw)), the share of light a sample of s voxels with raw density `raw`
// lets through (softplus as torch's: beta 1, linear above 20). For the frames' half- and
// whole-voxel steps that is (1 + e^raw)^(-s): one exponential and a square root or a
// division, where exp(log1p(exp)) took three transcendental calls.
SCENE_HD float transmit(float raw, float s) {
  if (raw > 20.0f) return fast_exp(-s * raw);
  const float u = 1.0f + fast_exp(raw);
  if (s == 0.5f) return 1.0f / sqrtf(u);
  if (s == 1.0f) return 1.0f / u;
  return expf(-s * log1pf(fast_exp(raw)));  // any other step: rare, the library's accuracy
}

// Trilinear weights of a cell's 8 corners (z-major, then y, then x, as the tables) at
// fractions f: computed once per sample and shared by density, colour and classes, where
// a blend of lerps per value cost three times the arithmetic.
SCENE_HD void corner_weights(const float f[3], float w[8]) {
  const float yz[4] = {(1.0f - f[1]) * (1.0f - f[2]), f[1] * (1.0f - f[2]), (1.0f - f[1]) * f[2], f[1] * f[2]};
  for (int j = 0; j < 4; ++j) {
    w[2 * j] = yz[j] * (1.0f - f[0]);
    w[2 * j + 1] = yz[j] * f[0];
  }
}

// The blend of 8 corner values at stride `s` with corner weights w.
SCENE_HD float blend8(const float* c, int s, const float w[8]) {
  float v = 0.0f;
  for (int j = 0; j < 8; ++j) v += w[j] * c[j * s];
  return v;
}

// A point in cell units -> its occupied row (or air) and fractions within the cell, as
// CellTable.flat_cells: clamped just inside the grid (1e-3 of a cell), then floored.
SCENE_HD int32_t cell_row(const FrameParams& p, float gx, float gy, float gz, float f[3]) {
  float g[3] = {gx, gy, gz};
  int32_t c[3];
  for (int a = 0; a < 3; ++a) {
    float v = mn(mx(g[a], 0.0f), (float)p.cells[a] - 1e-3f);
    float fl = floorf(v);
    f[a] = v - fl;
    c[a] = (int32_t)fl;
  }
  int64_t flat = ((int64_t)c[0] * p.cells[1] + c[1]) * p.cells[2] + c[2];
  return p.row[flat];
}

#ifndef __CUDACC__
// CPU only: a frame is bound by the latency of its table reads (a cell's row, then that
// row's densities and colours), one ray at a time, so the loop asks for them a few samples
// ahead: the row entry LOOK_ROW samples ahead, and the densities and colours LOOK_DENSITY
// samples ahead, whose row entry was asked for LOOK_ROW - LOOK_DENSITY samples earlier.
// Prefetches change no value; a lookahead past the window's end asks for what the next
// window usually reads (it starts where this one ends unless the ray traces through free
// space). With the 2 cm apartment (tables of 10-50 MB) this took a 256 px bake frame from
// about 70 to 60 ms on the 2-core dev machine (6 / 3 samples measured best of 3-8 ahead).
constexpr int LOOK_ROW = 6, LOOK_DENSITY = 3;
inline const int32_t* row_entry(const FrameParams& p, float gx, float gy, float gz) {
  const float g[3] = {gx, gy, gz};
  int64_t flat = 0;
  for (int a = 0; a < 3; ++a) flat = flat * p.cells[a] + (int32_t)mn(mx(g[a], 0.0f), (float)p.cells[a] - 1e-3f);
  return p.row + flat;
}
inline void prefetch_ahead(const FrameParams& p, const float og[3], const float dg[3], float ts) {
  const float ta = ts + (float)LOOK_ROW * p.step, tb = ts + (float)LOOK_DENSITY * p.step;
  const int32_t rb = *row_entry(p, og[0] + tb * dg[0], og[1] + tb * dg[1], og[2] + tb * dg[2]);
  SCENE_PREFETCH(row_entry(p, og[0] + ta * dg[0], og[1] + ta * dg[1], og[2] + ta * dg[2]));
  if (rb < p.air) {
    SCENE_PREFETCH(p.density + 8 * (int64_t)rb);
    SCENE_PREFETCH(p.colour + 24 * (int64_t)rb);
    SCENE_PREFETCH(p.colour + 24 * (int64_t)rb + 16);
  }
}
#endif

// Sphere tracing over the padded skip table (interactive._trace): advance by the free
// distance of the current cell until it is 0 (next to occupancy) or the ray leaves.
SCENE_HD float trace(const FrameParams& p, const float og[3], const float dg[3], float t, float far_t) {
  for (int i = 0; i < p.max_trace; ++i) {
    int64_t flat = 0;
    for (int a = 0; a < 3; ++a) {
      // +1: the padded table's units; the clamp only guards float rounding at the box
      int32_t c = (int32_t)floorf(og[a] + 1.0f + t * dg[a]);
      c = c < 0 ? 0 : (c >= p.padded[a] ? p.padded[a] - 1 : c);
      flat = flat * p.padded[a] + c;
    }
    float skip = p.trace_skip[flat];
    if (skip <= 0.0f) break;
    t = mn(t + skip, far_t);
    if (!(t < far_t)) break;
  }
  return t;
}

// One ray: pixel i of this frame's list (or of the image) -> rgb, depth, acc, probs row i.
SCENE_HD void render_ray(const FrameParams& p, int64_t i) {
  const int64_t pix = p.pixels ? p.pixels[i] : i;
  const int px = (int)(pix % p.width), py = (int)(pix / p.width);
  // the camera-frame direction, unit, rotated into the world (frames.frame_rays)
  float dc[3] = {((float)px + 0.5f - 0.5f * (float)p.width) / p.focal,
                 -(((float)py + 0.5f - 0.5f * (float)p.height) / p.focal), -1.0f};
  const float inv_len = 1.0f / sqrtf(dc[0] * dc[0] + dc[1] * dc[1] + dc[2] * dc[2]);
  float d[3], og[3], dg[3];
  float near_t = 0.0f, far_t = INFINITY;
  for (int a = 0; a < 3; ++a) {
    d[a] = (p.rot[3 * a] * dc[0] + p.rot[3 * a + 1] * dc[1] + p.rot[3 * a + 2] * dc[2]) * inv_len;
    // the box's slabs (volume.slab_bounds)
    const float inv = 1.0f / (fabsf(d[a]) < 1e-9f ? 1e-9f : d[a]);
    const float t1 = (p.lo[a] - p.eye[a]) * inv, t2 = (p.hi[a] - p.eye[a]) * inv;
    near_t = mx(near_t, mn(t1, t2));
    far_t = mn(far_t, mx(t1, t2));
    og[a] = (p.eye[a] - p.lo[a]) / p.voxel;
    dg[a] = d[a] / p.voxel;
  }
  const float tau_scale = p.step / p.voxel;
  float t = mx(p.start[pix], near_t);
  float trans = 1.0f, rgb[3] = {0.0f, 0.0f, 0.0f}, depth = 0.0f, peak_w = 0.0f, peak_t = 0.0f;
  for (int r = 0; r < p.max_rounds && t < far_t; ++r) {
    if (r) {
      t = trace(p, og, dg, t, far_t);
      if (!(t < far_t)) break;
    }
    const int win = r ? p.window : p.first_window;
    // within a window as the torch frame: transmittance e from the window's start (the
    // torch frame's exp(-cumsum tau), here as a running product), a sample's weight
    // (e[k-1] - e[k]) times the transmittance before the window
    float e_prev = 1.0f, w_sum = 0.0f, w_kept = 0.0f, c[3] = {0.0f, 0.0f, 0.0f};
#ifndef __CUDACC__
    for (int k = 0; k < LOOK_ROW; ++k) {  // the window's first row entries, all at once
      const float ts = t + ((float)k + 0.5f) * p.step;
      SCENE_PREFETCH(row_entry(p, og[0] + ts * dg[0], og[1] + ts * dg[1], og[2] + ts * dg[2]));
    }
#endif
    for (int k = 0; k < win; ++k) {
      const float ts = t + ((float)k + 0.5f) * p.step;
      if (!(ts < far_t)) break;  // the rest of the window is outside: no weight
#ifndef __CUDACC__
      prefetch_ahead(p, og, dg, ts);
#endif
      float f[3], cw[8];
      const int32_t row = cell_row(p, og[0] + ts * dg[0], og[1] + ts * dg[1], og[2] + ts * dg[2], f);
      if (row >= p.air) continue;  // empty cell: no density by construction
      // the colour row's two cache lines, read after the transmittance: their misses
      // overlap the density row's instead of following it
      SCENE_PREFETCH(p.colour + 24 * (int64_t)row);
      SCENE_PREFETCH(p.colour + 24 * (int64_t)row + 16);
      corner_weights(f, cw);
      const float e = e_prev * transmit(blend8(p.density + 8 * (int64_t)row, 1, cw), tau_scale);
      const float w = (e_prev - e) * trans;
      e_prev = e;
      depth += w * ts;
      w_sum += w;
      if (w > peak_w) {  // strict: the first of equal peaks, as torch's max
        peak_w = w;
        peak_t = ts;
        // the classes are read at the peak once the ray ends: start their lines now
        SCENE_PREFETCH(p.class_corners + (int64_t)row * 8 * p.kept_classes);
        SCENE_PREFETCH(p.class_corners + (int64_t)row * 8 * p.kept_classes + 16);
        SCENE_PREFETCH(p.class_ids + (int64_t)row * p.kept_classes);
      }
      if (w > p.app_eps) {
        const float* col = p.colour + 24 * (int64_t)row;
        for (int ch = 0; ch < 3; ++ch) c[ch] += w * blend8(col + ch, 3, cw);
        w_kept += w;
      }
      // a surface is opaque within a few samples and the first window runs on several
      // voxels behind it: those samples (a sixth of the room's occupied ones) cannot
      // change the pixel by more than t_negligible
      if (trans * e < p.t_negligible) break;
    }
    if (w_kept > 0.0f) {  // the window's dropped weight goes to its kept samples
      const float scale = w_sum / mx(w_kept, 1e-8f);
      for (int ch = 0; ch < 3; ++ch) rgb[ch] += c[ch] * scale;
    }
    trans *= e_prev;
    t += (float)win * p.step;
    if (!(trans > p.t_stop)) break;
  }
  const float acc = 1.0f - trans;
  float* out = p.probs + i * (int64_t)p.classes;
  for (int k = 0; k < p.classes; ++k) out[k] = 0.0f;
  if (peak_w > 0.0f) {
    // classes once per ray at its peak sample: the cell's kept classes, blended,
    // clamped at 0 and normalised over them (CellTable.class_probs_planes)
    float f[3], cw[8];
    const int32_t row = cell_row(p, og[0] + peak_t * dg[0], og[1] + peak_t * dg[1], og[2] + peak_t * dg[2], f);
    corner_weights(f, cw);
    const int m = p.kept_classes;
    const float* corners = p.class_corners + (int64_t)row * 8 * m;
    const int32_t* ids = p.class_ids + (int64_t)row * m;
    float sum = 0.0f;
    for (int k = 0; k < m; ++k) sum += mx(blend8(corners + k, m, cw), 0.0f);
    const float norm = acc / mx(sum, 1e-6f);
    for (int k = 0; k < m; ++k) out[ids[k]] = mx(blend8(corners + k, m, cw), 0.0f) * norm;
  }
  out[0] += trans;
  p.depth[i] = depth + trans * mx(far_t, near_t);
  p.acc[i] = acc;
  for (int ch = 0; ch < 3; ++ch) p.rgb[3 * i + ch] = rgb[ch] + trans * p.background[ch];
}

#ifdef __CUDACC__
// One thread per ray; 128 threads a block keep enough blocks for a 256x256 frame's rays
// to fill every SM of an H200.
__global__ void __launch_bounds__(128) scene_frame_kernel(const __grid_constant__ FrameParams p) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < p.n) render_ray(p, i);
}
#endif

}  // namespace scene
}  // namespace tinyserve
