// The scene's bake frame on the CPU: the per-ray loop of kernels/scene_frame.cuh over a
// frame's rays on one thread, in pixel order (neighbouring rays read neighbouring cells,
// so the tables stay in cache). Built with the system C++ compiler on first use and
// loaded with ctypes (tinyserve_core/scene/native.py); no torch headers.
//
// Besides the plain cast of a list of pixels, the whole CPU frame in one call
// (scene/native_image.py): the splatted start distances (scene/splat.py's StartSplat) and
// the adaptive image-space refinement (scene/adaptive.py: even pixels cast, the rest
// interpolated where their cast neighbours agree, else cast). Both are CPU-only code here,
// not in the shared header: the GPU casts every pixel and splats with torch.
#include <math.h>

#include <vector>

#include "kernels/scene_frame.cuh"

using tinyserve::scene::FrameParams;
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

// scene/native_image.py SplatParams: StartSplat's surface cells as planes and one camera.
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
  float* blocks;          // [ceil(H / block) * ceil(W / block)] scratch
  float* start;           // [H * W] out
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
  // adaptive._upsample does, or cast
  void refine(int s, int levels, float max_depth) {
    const int w = p.width, hs = (p.height + s - 1) / s, ws = (w + s - 1) / s;
    auto at = [&](int r, int c) { return (int64_t)r * s * w + (int64_t)c * s; };
    if (levels == 0 || (hs < ws ? hs : ws) < a.min_side) {
      for (int r = 0; r < hs; ++r)
        for (int c = 0; c < ws; ++c) render(at(r, c));
      return;
    }
    refine(2 * s, levels - 1, 2 * max_depth);
    for (int r = 0; r < hs; ++r) {
      for (int c = 0; c < ws; ++c) {
        const bool odd_r = r & 1, odd_c = c & 1;
        if (!odd_r && !odd_c) continue;  // cast at the coarser level
        // a last odd row / column of an even side has no cast neighbour beyond it
        if ((odd_r && r + 1 >= hs) || (odd_c && c + 1 >= ws)) {
          render(at(r, c));
          continue;
        }
        const int r0 = r - odd_r, c0 = c - odd_c;
        int64_t q[4];
        int n = 0;
        // the cast neighbours: one step of this grid either side (so q is top-left,
        // top-right, bottom-left, bottom-right of a quad)
        q[n++] = at(r0, c0);
        if (odd_c) q[n++] = at(r0, c0 + 2);
        if (odd_r) q[n++] = at(r0 + 2, c0);
        if (odd_r && odd_c) q[n++] = at(r0 + 2, c0 + 2);
        if (!agree(q, n, max_depth)) {
          render(at(r, c));
          continue;
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
    }
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
// The same arithmetic in float32 as the torch splat, cell by cell.
int scene_splat_starts(const SplatParams* s) {
  const int w = s->width, h = s->height, b = s->block;
  const int wb = (w + b - 1) / b, hb = (h + b - 1) / b;
  const float r = s->radius, edge = s->edge;
  for (int64_t i = 0; i < (int64_t)wb * hb; ++i) s->blocks[i] = INFINITY;
  for (int64_t i = 0; i < s->k; ++i) {
    float rel[3];
    bool seen = false;
    for (int a = 0; a < 3; ++a) {
      rel[a] = s->centres[a * s->k + i] - s->eye[a];
      seen |= (s->faces[2 * a * s->k + i] && rel[a] > edge) || (s->faces[(2 * a + 1) * s->k + i] && rel[a] < -edge);
    }
    if (!seen) continue;
    // camera frame: x right, y up, z forward (R^T rel, negated z)
    float cam[3];
    for (int j = 0; j < 3; ++j) cam[j] = s->rot[j] * rel[0] + s->rot[3 + j] * rel[1] + s->rot[6 + j] * rel[2];
    const float x = cam[0], y = cam[1];
    float z = -cam[2];
    if (fabsf(z) <= s->plane) {
      const float reach = fabsf(z) + r;
      if (fabsf(x) - r <= reach * s->tan_x + 1e-6f && fabsf(y) - r <= reach * s->tan_y + 1e-6f) return 1;
      continue;  // across the plane, out of view
    }
    if (!(z > s->plane)) continue;  // behind the eye
    float g2 = 0.0f;
    for (int a = 0; a < 3; ++a) {
      const float g = mx(fabsf(rel[a]) - s->half, 0.0f);
      g2 += g * g;
    }
    const float start = sqrtf(g2);
    z = mx(z, 2.0f * r);
    const float zz = z * z - s->radius2, k = s->focal / zz;
    const float sx = sqrtf(x * x + zz) * r, sy = sqrtf(y * y + zz) * r, xz = x * z, yz = y * z;
    const int i0 = (int)mx(floorf(ceilf((xz - sx) * k + s->x_lo) / (float)b), 0.0f);
    const int i1 = (int)mn(floorf(((xz + sx) * k + s->x_hi) / (float)b), (float)(wb - 1));
    const int j0 = (int)mx(floorf(ceilf((-yz - sy) * k + s->y_lo) / (float)b), 0.0f);
    const int j1 = (int)mn(floorf(((-yz + sy) * k + s->y_hi) / (float)b), (float)(hb - 1));
    for (int bj = j0; bj <= j1; ++bj)
      for (int bi = i0; bi <= i1; ++bi) {
        float& v = s->blocks[(int64_t)bj * wb + bi];
        v = mn(v, start);
      }
  }
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) s->start[(int64_t)y * w + x] = s->blocks[(int64_t)(y / b) * wb + x / b];
  return 0;
}

}  // extern "C"
