// A decode step's RoPE and cache write in one launch: rotate q and k in place, then write
// k and v into their cache slots and refresh the page bounds, one CTA per token, for calls
// with at most one token per page (cache_write_token_meta_kernel's promise). In a
// batch-1 step the two kernels it replaces were latency-bound (one CTA each): 4.3 us a
// layer after the q/k/v product on an H200, most of it the rotary's sin/cos per head. The
// rounding is rotary_kernel's (fused_layer.cuh), so the cache
// receives the same bits as from the two kernels.
// Pure CUDA: no torch headers (compile-checked with nvcc alone).
#pragma once

#include "fused_layer.cuh"
#include "reshape_and_cache.cuh"

namespace tinyserve {

struct RotaryCacheParams {
  CacheWriteParams c;        // key/value views, caches, meta (or nullptr), slots
  void* q;                   // [T, Hq, D], heads dense, rows q_stride apart (elements)
  void* k;                   // c.key, written back rotated
  int64_t q_stride;
  int q_heads;
  const int64_t* positions;  // [T]
  const float* inv_freq;     // [D / 2]
};

// Rotates VEC pairs (x1[j], x2[j]) = elements (i0 + j, i0 + j + D/2) of one head, as
// rotary_kernel does for one pair: cos and sin from rope_table, each product and the sum
// rounded to T.
template <typename T>
__device__ __forceinline__ void rotate_vectors(uint4& a, uint4& b, int i0, const float* cs, const float* sn) {
  constexpr int VEC = 16 / sizeof(T);
  T* x1 = reinterpret_cast<T*>(&a);
  T* x2 = reinterpret_cast<T*>(&b);
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const float c = cs[i0 + j], s = sn[i0 + j];
    const float f1 = to_float(x1[j]), f2 = to_float(x2[j]);
    x1[j] = from_float<T>(round_to<T>(f1 * c) + round_to<T>(-f2 * s));
    x2[j] = from_float<T>(round_to<T>(f2 * c) + round_to<T>(f1 * s));
  }
}

// Items of a token: q_heads * H vector pairs of q, Hkv * H pairs of k (H = D / 2 / VEC),
// then the Hkv * D / VEC vectors of v; threads stride over them.
template <typename T>
__global__ void __launch_bounds__(256) rotary_cache_token_kernel(const __grid_constant__ RotaryCacheParams rp) {
  constexpr int VEC = 16 / sizeof(T);
  using MM = VecMinMax<T>;
  const CacheWriteParams& p = rp.c;
  const int D = p.head_dim, H = D / 2 / VEC;
  const int vec_per_head = D / VEC, vec_per_row = p.num_kv_heads * vec_per_head;
  pdl_entry();
  const int t = blockIdx.x;
  __shared__ float cs[kRopeMaxPairs], sn[kRopeMaxPairs];   // D / 2 <= kRopeMaxPairs (the glue checks)
  rope_table<T>(cs, sn, (float)rp.positions[t], rp.inv_freq, D / 2);
  const int64_t slot = p.slot_mapping[t];   // -1: padding, rotated but not written
  const int64_t blk = slot / p.block_size;
  const bool fresh = slot == blk * p.block_size;
  const int q_items = rp.q_heads * H, k_items = p.num_kv_heads * H;
  const int items = q_items + k_items + (slot < 0 ? 0 : vec_per_row);
  for (int i = threadIdx.x; i < items; i += blockDim.x) {
    if (i < q_items + k_items) {
      const bool is_q = i < q_items;
      const int j = is_q ? i : i - q_items;
      const int h = j / H, c = j - h * H;
      T* head = is_q ? static_cast<T*>(rp.q) + t * rp.q_stride + (int64_t)h * D
                     : static_cast<T*>(rp.k) + t * p.key_stride + h * p.key_head_stride;
      uint4* a = reinterpret_cast<uint4*>(head) + c;
      uint4 x1 = a[0], x2 = a[H];
      rotate_vectors<T>(x1, x2, c * VEC, cs, sn);
      a[0] = x1;
      a[H] = x2;
      if (is_q || slot < 0) continue;
      const int v = h * vec_per_head + c;
      uint4* kc = reinterpret_cast<uint4*>(p.k_cache) + slot * vec_per_row + v;
      kc[0] = x1;
      kc[H] = x2;
      if (p.meta == nullptr) continue;
      uint4* mn = reinterpret_cast<uint4*>(p.meta) + blk * 2 * vec_per_row + v;
      uint4* mx = mn + vec_per_row;
      if (fresh) {   // the page's first slot: its bounds are this key
        mn[0] = x1, mn[H] = x2, mx[0] = x1, mx[H] = x2;
      } else {       // slots 0..offset-1 came earlier (pages fill in order): merge
        mn[0] = MM::min(mn[0], x1), mn[H] = MM::min(mn[H], x2);
        mx[0] = MM::max(mx[0], x1), mx[H] = MM::max(mx[H], x2);
      }
    } else {
      const int v = i - q_items - k_items;
      const int h = v / vec_per_head, c = v - h * vec_per_head;
      const T* src = static_cast<const T*>(p.value) + t * p.value_stride + h * p.value_head_stride;
      reinterpret_cast<uint4*>(p.v_cache)[slot * vec_per_row + v] = reinterpret_cast<const uint4*>(src)[c];
    }
  }
}

}  // namespace tinyserve
