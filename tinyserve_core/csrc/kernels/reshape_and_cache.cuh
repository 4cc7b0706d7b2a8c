// reshape_and_cache: scatter new tokens' K/V rows into their cache slots, then refresh the
// channel-wise key min/max of every touched page.
//
// Pass 1 copies rows with 16-byte vectors and records, per touched page, the highest offset
// written (atomicMax into a scratch array holding -1). Pass 2 runs after every row of the
// call has landed: for each page exactly one token (the one writing that highest offset,
// chosen by an atomic exchange back to -1) recomputes min/max over slots 0..offset. That
// is the reference's semantics (pages fill in order; offset 0 starts a page afresh) and it
// is race-free however many tokens of one page the call carries (prefill); the scratch is
// left all -1 again.
#pragma once

#include "common.cuh"

namespace tinyserve {

struct CacheWriteParams {
  const void* key;         // [T, Hkv, D], rows strided by key_stride (elements), heads by head_stride
  const void* value;
  void* k_cache;           // [NB, BS, Hkv, D]
  void* v_cache;
  void* meta;              // [NB, 2, Hkv, D] or nullptr
  const int64_t* slot_mapping;  // [T], -1 skips
  int* last_offset;        // [NB] scratch, all -1 on entry and on exit
  int64_t key_stride, key_head_stride, value_stride, value_head_stride;
  int num_tokens, num_kv_heads, head_dim, block_size;
};

// One thread per 16-byte vector of a token's row (K and V together).
template <typename T>
__global__ void __launch_bounds__(256) cache_write_kernel(const __grid_constant__ CacheWriteParams p) {
  constexpr int VEC = 16 / sizeof(T);
  const int vec_per_head = p.head_dim / VEC;
  const int vec_per_row = p.num_kv_heads * vec_per_head;
  const int64_t total = (int64_t)p.num_tokens * vec_per_row;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int t = (int)(i / vec_per_row);
    const int v = (int)(i - (int64_t)t * vec_per_row);
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;
    const int h = v / vec_per_head, c = v - h * vec_per_head;
    const T* ks = static_cast<const T*>(p.key) + t * p.key_stride + h * p.key_head_stride + c * VEC;
    const T* vs = static_cast<const T*>(p.value) + t * p.value_stride + h * p.value_head_stride + c * VEC;
    const uint4 kv = *reinterpret_cast<const uint4*>(ks);
    const uint4 vv = *reinterpret_cast<const uint4*>(vs);
    const int64_t dst = slot * vec_per_row + v;  // slot * row, in 16-byte vectors
    reinterpret_cast<uint4*>(p.k_cache)[dst] = kv;
    reinterpret_cast<uint4*>(p.v_cache)[dst] = vv;
    if (p.meta != nullptr && v == 0) {
      const int64_t blk = slot / p.block_size;
      atomicMax(p.last_offset + blk, (int)(slot - blk * p.block_size));
    }
  }
}

// One CTA per token; only the owner of its page's highest written offset does any work.
template <typename T>
__global__ void __launch_bounds__(128) page_meta_kernel(const __grid_constant__ CacheWriteParams p) {
  constexpr int VEC = 16 / sizeof(T);
  __shared__ int owner;
  const int t = blockIdx.x;
  const int64_t slot = p.slot_mapping[t];
  if (slot < 0) return;
  const int64_t blk = slot / p.block_size;
  const int off = (int)(slot - blk * p.block_size);
  if (threadIdx.x == 0) {
    owner = (*(volatile int*)(p.last_offset + blk) == off) && atomicExch(p.last_offset + blk, -1) == off;
  }
  __syncthreads();
  if (!owner) return;

  const int vec_per_row = p.num_kv_heads * p.head_dim / VEC;
  const uint4* page = reinterpret_cast<const uint4*>(p.k_cache) + blk * p.block_size * vec_per_row;
  uint4* mn = reinterpret_cast<uint4*>(p.meta) + blk * 2 * vec_per_row;
  uint4* mx = mn + vec_per_row;
  for (int v = threadIdx.x; v < vec_per_row; v += blockDim.x) {
    float lo[VEC], hi[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      lo[i] = INFINITY;
      hi[i] = -INFINITY;
    }
    int s = 0;
    // Four rows in flight per thread: the page is latency-bound, not bandwidth-bound.
    for (; s + 4 <= off + 1; s += 4) {
      uint4 r[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) r[u] = page[(int64_t)(s + u) * vec_per_row + v];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const T* e = reinterpret_cast<const T*>(&r[u]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          lo[i] = fminf(lo[i], to_float(e[i]));
          hi[i] = fmaxf(hi[i], to_float(e[i]));
        }
      }
    }
    for (; s <= off; ++s) {
      const uint4 r = page[(int64_t)s * vec_per_row + v];
      const T* e = reinterpret_cast<const T*>(&r);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        lo[i] = fminf(lo[i], to_float(e[i]));
        hi[i] = fmaxf(hi[i], to_float(e[i]));
      }
    }
    uint4 olo, ohi;
    T* el = reinterpret_cast<T*>(&olo);
    T* eh = reinterpret_cast<T*>(&ohi);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      el[i] = from_float<T>(lo[i]);  // min/max of representable values: exact
      eh[i] = from_float<T>(hi[i]);
    }
    mn[v] = olo;
    mx[v] = ohi;
  }
}

#define TINYSERVE_CACHE_INSTANCES(X) \
  X(float)                           \
  X(__half)                          \
  X(__nv_bfloat16)

}  // namespace tinyserve
