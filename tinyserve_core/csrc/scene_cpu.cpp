// The scene's bake frame on the CPU: the per-ray loop of kernels/scene_frame.cuh over a
// frame's rays on one thread, in pixel order (neighbouring rays read neighbouring cells,
// so the tables stay in cache). Built with the system C++ compiler on first use and
// loaded with ctypes (tinyserve_core/scene/native.py); no torch headers.
//
// Besides the plain cast of a list of pixels, the whole CPU frame in one call
// (scene/native_image.py): the splatted start distances (scene/splat.py's StartSplat, per
// cell the shared kernels/scene_splat.cuh, which the GPU library runs a thread per cell)
// and the adaptive image-space refinement (scene/adaptive.py: even pixels cast, the rest
// interpolated where their cast neighbours agree, else cast), CPU-only code: the GPU
// casts every pixel.
#include <math.h>

#include <vector>

#include "kernels/scene_frame.cuh"
#include "kernels/scene_splat.cuh"

using tinyserve::scene::FrameParams;
using tinyserve::scene::SplatParams;
using tinyserve::scene::mn;
using tinyserve::scene::mx;

namespace {

// scene/native_image.py AdaptiveParams, field for field: the agreement tolerances of
// scene/adaptive.py (MAX_ACC_RANGE, depth range in metres at the finest level,
// MAX_RGB_RANGE), MIN_SIDE, the refinement levels and whether colour, depth and opacity
// edges are cast (else label changes only).
struct AdaptiveParams {
  float max_acc, max_depth, max_rgb;
  int32_t min_side, levels, colour_edges;
};

struct Frame {
  const FrameParams& p;
  const AdaptiveParams& a;
  int64_t cast = 0;
  // each pixel's label once its values are in (-1: not yet asked): a cast pixel is the
  // neighbour of up to eight others, and each agreement test wanted its argmax over C
  std::vector<int16_t> labels = std::vector<int16_t>((size_t)p.width * p.height, -1);
  void render(int64_t pix) {
    tinyserve::scene::render_ray(p, pix);
    ++cast;
  }
  int label(int64_t pix) {  // argmax, the first of equal maxima (torch's)
    int16_t& l = labels[pix];
    if (l < 0) {
      const float* pr = p.probs + pix * p.classes;
      int best = 0;
      for (int k = 1; k < p.classes; ++k)
        if (pr[k] > pr[best]) best = k;
      l = (int16_t)best;
    }
    return l;
  }
  // whether the cast pixels q[0..n) agree (adaptive._agreement): one label and, with
  // colour edges, opacity, depth and colour each within its tolerance
  bool agree(const int64_t* q, int n, float max_depth) {
    const int l0 = label(q[0]);
    for (int i = 1; i < n; ++i)
      if (label(q[i]) != l0) return false;
    if (!a.colour_edges) return true;
    auto within = [&](const float* v, int stride, float tol) {
      float lo = v[q[0] * stride] / tol, hi = lo;
      for (int i = 1; i < n; ++i) {
        const float x = v[q[i] * stride] / tol;
        lo = mn(lo, x);
        hi = mx(hi, x);
      }
      return hi - lo < 1.0f;
    };
    if (!within(p.acc, 1, a.max_acc) || !within(p.depth, 1, max_depth)) return false;
    for (int c = 0; c < 3; ++c)
      if (!within(p.rgb + c, 3, a.max_rgb)) return false;
    return true;
  }
  // adaptive._refine over the pixels (r * s, c * s) of the image: the grid at stride 2s
  // first, then each other pixel interpolated from its (two or four) cast neighbours as
  // adaptive._upsample does, or cast.
  //
  // In tiles of kTile x kTile pixels of this grid, raster order: a tile's rays read
  // neighbouring cells, so its cells' table rows stay in cache between its casts (a whole
  // coarse pass first touched megabytes of tables before the second pass came back to
  // them). Where the coarser grid is plain casts (levels == 1, the CPU frame's setting)
  // they are made on demand, tile by tile, as its pixels need them. The order changes no
  // value: a cast depends on its own ray, an interpolation on cast neighbours only.
  static constexpr int kTile = 16;
  void refine(int s, int levels, float max_depth) {
    const int w = p.width, hs = (p.height + s - 1) / s, ws = (w + s - 1) / s;
    auto at = [&](int r, int c) { return (int64_t)r * s * w + (int64_t)c * s; };
    if (levels == 0 || (hs < ws ? hs : ws) < a.min_side) {
      for (int r = 0; r < hs; ++r)
        for (int c = 0; c < ws; ++c) render(at(r, c));
      return;
    }
    const bool lazy = levels == 1;
    if (!lazy) refine(2 * s, levels - 1, 2 * max_depth);
    std::vector<uint8_t> done(lazy ? (size_t)hs * ws : 0, 0);
    auto coarse = [&](int r, int c) {  // a pixel of the coarser grid, cast once
      const int64_t pix = at(r, c);
      if (lazy && !done[(size_t)r * ws + c]) {
        done[(size_t)r * ws + c] = 1;
        render(pix);
      }
      return pix;
    };
    for (int tr = 0; tr < hs; tr += kTile) {
      const int r1 = tr + kTile < hs ? tr + kTile : hs;
      for (int tc = 0; tc < ws; tc += kTile) {
        const int c1 = tc + kTile < ws ? tc + kTile : ws;
        for (int r = tr; r < r1; r += 2)  // tiles start on even rows and columns
          for (int c = tc; c < c1; c += 2) coarse(r, c);
        for (int r = tr; r < r1; ++r)
          for (int c = tc; c < c1; ++c) fine(r, c, hs, ws, max_depth, at, coarse);
      }
    }
  }
  // Pixel (r, c) of the grid at(): skipped if it is of the coarser grid, else
  // interpolated from the coarser neighbours that agree, or cast.
  template <class At, class Coarse>
  void fine(int r, int c, int hs, int ws, float max_depth, At at, Coarse coarse) {
    const bool odd_r = r & 1, odd_c = c & 1;
    if (!odd_r && !odd_c) return;  // of the coarser grid
    // a last odd row / column of an even side has no cast neighbour beyond it
    if ((odd_r && r + 1 >= hs) || (odd_c && c + 1 >= ws)) {
      render(at(r, c));
      return;
    }
    const int r0 = r - odd_r, c0 = c - odd_c;
    int64_t q[4];
    int n = 0;
    // the cast neighbours: one step of this grid either side (so q is top-left,
    // top-right, bottom-left, bottom-right of a quad)
    q[n++] = coarse(r0, c0);
    if (odd_c) q[n++] = coarse(r0, c0 + 2);
    if (odd_r) q[n++] = coarse(r0 + 2, c0);
    if (odd_r && odd_c) q[n++] = coarse(r0 + 2, c0 + 2);
    if (!agree(q, n, max_depth)) {
      render(at(r, c));
      return;
    }
    const int64_t pix = at(r, c);
    // channel by channel as adaptive._upsample, over each output array's own run
    // (rgb, depth, probs, acc) rather than a lookup per channel
    auto mix = [&](float* base, int width) {
      float* out = base + pix * width;
      const float *a0 = base + q[0] * width, *a1 = base + q[1] * width;
      if (n == 2) {
        for (int k = 0; k < width; ++k) out[k] = (a0[k] + a1[k]) * 0.5f;
        return;
      }  // the column means of the two rows, then their mean
      const float *a2 = base + q[2] * width, *a3 = base + q[3] * width;
      for (int k = 0; k < width; ++k) out[k] = ((a0[k] + a2[k]) * 0.5f + (a1[k] + a3[k]) * 0.5f) * 0.5f;
    };
    mix(p.rgb, 3);
    mix(p.depth, 1);
    mix(p.probs, p.classes);
    mix(p.acc, 1);
  }
};

}  // namespace

extern "C" {

int scene_frame_params_size() { return (int)sizeof(FrameParams); }
int scene_adaptive_params_size() { return (int)sizeof(AdaptiveParams); }
int scene_splat_params_size() { return (int)sizeof(SplatParams); }

int scene_frame_render(const FrameParams* p) {
  for (int64_t i = 0; i < p->n; ++i) tinyserve::scene::render_ray(*p, i);
  return 0;
}

// Every pixel of the frame (p->pixels must be null; the outputs are whole images),
// refined adaptively; returns how many rays were cast.
int64_t scene_frame_adaptive(const FrameParams* p, const AdaptiveParams* a) {
  Frame f{*p, *a};
  f.refine(1, a->levels, a->max_depth);
  return f.cast;
}

// StartSplat.starts for one camera into s->start; 1 where a surface cell the view could
// reach straddles the camera's plane (no bounded projection: the caller traces), else 0.
int scene_splat_starts(const SplatParams* s) {
  const int w = s->width, h = s->height, b = s->block;
  const int wb = (w + b - 1) / b, hb = (h + b - 1) / b;
  for (int64_t i = 0; i < (int64_t)wb * hb; ++i) s->blocks[i] = INFINITY;
  for (int64_t i = 0; i < s->k; ++i) {
    tinyserve::scene::CellBox box;
    const int kind = tinyserve::scene::splat_cell(*s, i, box);
    if (kind == tinyserve::scene::kStraddles) return 1;
    if (kind != tinyserve::scene::kBox) continue;
    for (int bj = box.j0; bj <= box.j1; ++bj)
      for (int bi = box.i0; bi <= box.i1; ++bi) {
        float& v = s->blocks[(int64_t)bj * wb + bi];
        v = mn(v, box.start);
      }
  }
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) s->start[(int64_t)y * w + x] = s->blocks[(int64_t)(y / b) * wb + x / b];
  return 0;
}

}  // extern "C"
