// Asking L2 for weights before a kernel reads them (Hopper's cp.async.bulk.prefetch.L2). A decode
// step at small batch is a chain of weight-streaming GEMVs with small kernels between them; in
// the stretch q/k norm + RoPE -> attention -> split merge -> quantization of a layer, HBM has
// almost nothing to read (a few MB of keys and values at batch 1) while the next projections'
// weights wait. A kernel at the start of that stretch may hand HBM those weights' first bytes
// (o_proj's, then gate_up's head) so that the GEMVs after it find them in L2.
//
// A prefetch is only a hint: it cannot change a result, only the time. The ranges here are plain
// pointers (weights, which no kernel of a decode step writes); the device side is
// core/util/l2_prefetch.cuh. Three earlier placements lost on an H100 (prefetch.global.L2 from
// the kernel right before the consumer, and from inside the GEMV: docs/BENCHMARKS.md); those ran
// while the previous GEMV still streamed, this one after it.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace fp8rl {

// Bytes [data, data + bytes) of one weight, in the order a projection streams them (row-major
// [out, in]: its first rows first).
struct L2Range {
  const void* data = nullptr;
  int64_t bytes = 0;
};

// At most kMaxRanges ranges, each 16-byte aligned and a multiple of 16 bytes (what the bulk
// prefetch takes), together at most the budget they were clipped to.
struct L2Prefetch {
  static constexpr int kMaxRanges = 2;
  L2Range ranges[kMaxRanges] = {};
  int64_t total_bytes() const {
    int64_t n = 0;
    for (const L2Range& r : ranges) n += r.bytes;
    return n;
  }
};

// One bulk prefetch asks for at most this many bytes; a kernel's blocks take the chunks of all
// ranges in turn (l2_prefetch.cuh).
constexpr int64_t kL2PrefetchChunk = int64_t{64} << 10;

// The first `budget` bytes of `weights` taken in order: whole ranges while they fit, then the head
// of the next one; a range that is null, empty or not 16-byte aligned is skipped, and each kept
// length is rounded down to a multiple of 16. At most L2Prefetch::kMaxRanges ranges are kept.
inline L2Prefetch clip_l2_prefetch(std::initializer_list<L2Range> weights, int64_t budget) {
  L2Prefetch p;
  int kept = 0;
  for (const L2Range& w : weights) {
    if (budget < 16 || kept == L2Prefetch::kMaxRanges) break;
    if (w.data == nullptr || w.bytes < 16 || reinterpret_cast<uintptr_t>(w.data) % 16 != 0) continue;
    const int64_t n = (w.bytes < budget ? w.bytes : budget) / 16 * 16;
    p.ranges[kept++] = {w.data, n};
    budget -= n;
  }
  return p;
}

// How many 64 KiB chunks (the last of a range may be shorter) the prefetch asks for.
inline int64_t l2_prefetch_chunks(const L2Prefetch& p) {
  int64_t n = 0;
  for (const L2Range& r : p.ranges) n += (r.bytes + kL2PrefetchChunk - 1) / kL2PrefetchChunk;
  return n;
}

#ifdef __CUDACC__
#define FP8RL_L2_HD __host__ __device__
#else
#define FP8RL_L2_HD
#endif

// Calls fn(address, bytes) for the chunks that part `part` of `parts` asks for: the chunks of all
// ranges numbered in order, part b taking b, b + parts, ... (the kernel's blocks; CPU-tested).
template <typename Fn>
FP8RL_L2_HD inline void for_each_l2_chunk(const L2Prefetch& p, int64_t part, int64_t parts, Fn&& fn) {
  int64_t first = 0;  // number of the range's first chunk among all ranges' chunks
  for (int r = 0; r < L2Prefetch::kMaxRanges; ++r) {
    const L2Range& range = p.ranges[r];
    const int64_t chunks = (range.bytes + kL2PrefetchChunk - 1) / kL2PrefetchChunk;
    // The range's first chunk that is ours: the smallest c >= 0 with (first + c) % parts == part.
    for (int64_t c = ((part - first) % parts + parts) % parts; c < chunks; c += parts) {
      const int64_t off = c * kL2PrefetchChunk, left = range.bytes - off;
      fn(static_cast<const char*>(range.data) + off, left < kL2PrefetchChunk ? left : kL2PrefetchChunk);
    }
    first += chunks;
  }
}

}  // namespace fp8rl
