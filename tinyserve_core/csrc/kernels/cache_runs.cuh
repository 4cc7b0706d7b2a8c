// reshape_and_cache with the page min/max update, second design (cache_write_runs_kernel):
// the same run rule as cache_write_meta_kernel (a CTA owns every run of consecutive tokens
// on one page that starts in its chunk; new bounds = the run's, merged with the old ones
// when the run continues its page; irregular pages recomputed by the last CTA), built for
// streaming:
//  - chunks are a whole page (up to 128 tokens) where the call is long enough, so every CTA
//    owns about one run (half the CTAs of the first design owned none at a 16K prefill);
//  - the chunk's slot entries (and a page beyond) are read once into shared memory;
//  - each thread owns one 16-byte column of the run's K or V rows (K and V columns in one
//    index space, so small heads still fill the CTA), 8 rows in flight;
//  - the per-block state lives in a persistent buffer tagged with a call number (epoch)
//    kept on the device, so nothing is zeroed before a launch (no memset); the last CTA
//    resets the counters and advances the epoch. Calls on one stream at a time, as the
//    engine makes them; CUDA-graph replays advance the epoch too.
#pragma once

#include "reshape_and_cache.cuh"

namespace tinyserve {

constexpr int kRunThreads = 256;
constexpr int kRunRows = 8;           // rows in flight per thread (12 and 16 spill at 2 CTAs per SM)
constexpr int kRunMaxChunk = 128;
constexpr int kRunWindow = 2 * kRunMaxChunk + 1;

struct CacheRunsParams {
  CacheWriteParams c;   // c.scratch and c.chunk unused; c.meta set
  unsigned long long* state;  // [num_blocks]: {epoch 32 | runs 2 | highest offset 30} per block
  unsigned long long* header; // {done CTAs, irregular count, last epoch, -}; the state follows, then
                              // the irregular list (num_blocks entries on)
  int chunk;
};

// Records a run of this call on block blk (epoch-tagged CAS); returns the block's run count
// before it (0 when the block's state is from an earlier call).
__device__ __forceinline__ int claim_block(unsigned long long* st, uint32_t epoch, int add, int last) {
  unsigned long long old = *reinterpret_cast<volatile unsigned long long*>(st), assumed;
  int before;
  do {
    assumed = old;
    const bool mine = uint32_t(assumed >> 32) == epoch;
    before = mine ? int((assumed >> 30) & 3u) : 0;
    const int hi = mine ? int(assumed & 0x3fffffffu) : 0;
    const unsigned long long nv = (unsigned long long)epoch << 32 |
                                  (unsigned long long)min(3, before + add) << 30 | (unsigned)max(hi, last);
    old = atomicCAS(st, assumed, nv);
  } while (old != assumed);
  return before;
}

template <typename T>
__global__ void __launch_bounds__(kRunThreads, 2)
cache_write_runs_kernel(const __grid_constant__ CacheRunsParams rp) {
  constexpr int VEC = 16 / sizeof(T);
  const CacheWriteParams& p = rp.c;
  __shared__ int64_t s_slot[kRunWindow];
  __shared__ bool is_last;
  const int vec_per_head = p.head_dim / VEC;
  const int vec_per_row = p.num_kv_heads * vec_per_head;
  const int64_t BS = p.block_size;
  // every CTA reads the epoch before the last one advances it (at its end)
  const uint32_t epoch = uint32_t(*reinterpret_cast<volatile unsigned long long*>(rp.header + 2)) + 1u;
  unsigned long long* list = rp.state + p.num_blocks;  // the irregular blocks of this call

  const int c0 = blockIdx.x * rp.chunk, t_end = min(p.num_tokens, c0 + rp.chunk);
  // the window: the token before the chunk, the chunk, and a page past it (a run's end)
  const int ws = max(0, c0 - 1);
  const int n_win = min(kRunWindow, min(p.num_tokens, t_end + min(p.block_size, kRunMaxChunk)) - ws);
  for (int i = threadIdx.x; i < n_win; i += kRunThreads) s_slot[i] = p.slot_mapping[ws + i];
  __syncthreads();
  auto slot_at = [&](int i) -> int64_t { return i - ws < n_win ? s_slot[i - ws] : p.slot_mapping[i]; };

  int t = first_owned_token(slot_at, c0, t_end, BS);
  while (t < t_end) {
    if (slot_at(t) < 0) {
      ++t;
      continue;
    }
    const CacheRun run = find_run(slot_at, t, p.num_tokens, BS);
    for (int w = threadIdx.x; w < 2 * vec_per_row; w += kRunThreads) {
      const bool is_key = w < vec_per_row;
      copy_run_column<T, kRunRows>(p, run, slot_at, is_key, is_key ? w : w - vec_per_row, vec_per_head,
                                   vec_per_row);
    }
    if (threadIdx.x == 0) {
      // A page is irregular once it has a second run or an out-of-order run; the run that
      // makes it so lists it (exactly once).
      const int add = run.in_order ? 1 : 2;
      const int before = claim_block(rp.state + run.blk, epoch, add, run.last);
      if (before < 2 && before + add >= 2) list[atomicAdd(rp.header + 1, 1ull)] = (unsigned long long)run.blk;
    }
    t = run.e;
  }

  // The last CTA repairs the irregular pages after every row of the call landed, then
  // clears the counters and records the epoch for the next call.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(rp.header, 1ull) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const int n = (int)*reinterpret_cast<volatile unsigned long long*>(rp.header + 1);
  for (int j = 0; j < n; ++j) {
    const int64_t blk = (int64_t)*reinterpret_cast<volatile unsigned long long*>(list + j);
    const unsigned long long st = *reinterpret_cast<volatile unsigned long long*>(rp.state + blk);
    recompute_page_meta<T>(p, blk, int(st & 0x3fffffffu));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    rp.header[0] = 0;
    rp.header[1] = 0;
    rp.header[2] = epoch;
  }
}

#define TINYSERVE_RUNS_INSTANCES(X) \
  X(float)                          \
  X(__half)                         \
  X(__nv_bfloat16)

}  // namespace tinyserve
