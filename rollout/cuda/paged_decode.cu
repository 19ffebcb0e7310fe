// Paged decode attention: one query per sequence over its cached keys, read in place through the
// block table (no gather of K/V into a packed copy). Reference: the engine's gather path
// (rollout/paged_attention.cpp: gather the context's keys, then whole-sequence attention), which
// tests/rollout/gpu_test_paged_decode.cpp compares this against on awkward shapes.
//
// Decode attention should be bound by the bytes of K and V it reads. The first two versions of
// this kernel did the dot products on CUDA cores (a warp per key row, shuffles to reduce, a
// thread per 1-8 value dims) and were bound by instruction latency instead: ~1 TB/s at batch
// 64 whatever the cache layout or the number of loads in flight (measured on an H200 with a
// harness that also read the same bytes at 3.8 TB/s), and slower still with an FP8 cache. So:
//   - one block = (sequence, KV head, split) serves the g query heads of that KV head, so each
//     K/V row is read once for all g heads (GQA without repeating K/V);
//   - tiles of 64 keys are copied into shared memory with cp.async, two stages deep: the next
//     tile is in flight while this one is computed (an FP8 cache at head_dim 128 may take three,
//     PagedDecodeArgs::fp8_three_stages: see Smem); the block-table entries a tile's copies need
//     are read one tile earlier still, so no copy waits on a table load;
//   - scores S[key, head] = K Q^T and the output O[head, d] += P V run on the tensor cores
//     (mma.sync m16n8k16, fp32 accumulation; the g <= 8 query heads are the MMA's narrow
//     side, padded to 8): each warp scores 16 keys of the tile, then owns D / 4 of the dims;
//   - an FP8 (E4M3) cache is widened to q's dtype when the MMA operands are loaded (exact:
//     E4M3 fits bf16 and fp16), or (kHalfMma) both MMAs run in fp16, q converted once; its
//     scales multiply the scores and the output; its keys enter the scores' MMA in a permuted
//     order of the head dims (q's fragments take the same one, so the dot products are the same
//     sums), which lets a lane read its part of a key row in one or two 16-byte loads (key_dim);
//   - online softmax per tile (running max and sum per head, log2 units: exp2f); P enters the
//     MMA in q's dtype (kHalfMma: fp16), as in flash attention;
//   - split-K over the context when the batch alone does not fill the GPU (batch 1: up to 64
//     chunks), merged by a second kernel from each chunk's (max, sum, unnormalised output);
//   - shared prefixes (rollout/shared_prefix.h, when the args carry a chunk table): a second
//     launch of the same kernel, with 16 query rows per block instead of 8, serves the g heads of
//     up to 16 / g sequences that share their first keys (a prompt's samples) and reads those
//     keys once for all of them; the first launch then reads each sequence's keys after its
//     prefix only, and the merge combines both launches' partial states like split-K chunks.
// The number of splits depends on the batch shape only, never on context lengths, so one CUDA
// graph per batch size replays for any context; splits with no keys exit after marking
// themselves empty. Without shared prefixes a row's bits do not depend on the batch's other
// sequences; with them they do (through the prefix length its chunk shares, which depends on
// which samples share its chunk), within the rounding of the order of the additions.
#include "rollout/cuda/rollout_kernels.h"
#include "rollout/fast_divmod.h"
#include "rollout/key_order.h"
#include "core/util/pdl.cuh"
#include "core/model/cuda/convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <stdexcept>
#include <type_traits>
#include <string>

namespace fp8rl::cuda {

// An FP8 KV cache holds E4M3 bit patterns in bytes (rollout/kv_cache.h); the scale is applied
// outside the inner loops (to the scores for keys, to the output for values). Declared in the same
// namespace as convert.cuh's overloads, not in the anonymous one below: there it would hide them
// from the kernels' unqualified calls, and bf16 would convert to uint8_t silently.
__device__ __forceinline__ float to_float(uint8_t x) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(x), __NV_E4M3)));
}

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTileK = 16 * kWarps;  // keys per tile: one 16-row MMA tile per warp
// Query rows per block (template R): 8, one MMA n-tile (the g <= 8 heads of one sequence; rows
// g..7 are zero), or 16, two n-tiles (a shared-prefix chunk: the g heads of up to 16 / g
// sequences). The P V product has 16 rows either way (m16n8k16); with R = 8 rows 8..15 are zero.
constexpr int kMaxRows = 16;
constexpr float kLog2e = 1.4426950408889634f;

// ---- small PTX wrappers ----
// cp.async: 16 bytes global -> shared without registers, L2 only (.cg: the cache is streamed once).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Two 16-bit values of T packed in a register: the MMA operand element pair.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// A bf16 pair (pack2<__nv_bfloat16>'s layout) in float.
__device__ __forceinline__ float2 bf16x2_to_float2(uint32_t u) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
}

// Two consecutive elements of a cache in q's dtype as an operand pair (an FP8 cache's keys go
// through load_key_words instead).
template <typename C>
__device__ __forceinline__ uint32_t load_pair(const C* p) {
  static_assert(sizeof(C) == 2, "a 16-bit cache");
  return *reinterpret_cast<const uint32_t*>(p);
}

// Two cache elements in different rows (a and b) as an operand pair of T.
template <typename T, typename C>
__device__ __forceinline__ uint32_t load_split_pair(const C* a, const C* b) {
  return pack2<T>(to_float(*a), to_float(*b));
}

// N consecutive E4M3 bytes from shared memory in 32-bit words (one load; N < 4 zero-extended).
template <int N>
__device__ __forceinline__ void load_bytes(const uint8_t* p, uint32_t (&w)[(N + 3) / 4]) {
  if constexpr (N == 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    w[0] = v.x;
    w[1] = v.y;
  } else if constexpr (N == 4) {
    w[0] = *reinterpret_cast<const uint32_t*>(p);
  } else if constexpr (N == 2) {
    w[0] = *reinterpret_cast<const uint16_t*>(p);
  } else {
    w[0] = *p;
  }
}

// Four E4M3 bytes x as two fp16 pairs: bytes 0-1 in lo, bytes 2-3 in hi (each with its first byte
// in the low half). Inline PTX so that the high half converts in place (the F2FP reads x.H1);
// through the intrinsic, x >> 16 costs a shift first.
__device__ __forceinline__ void e4m3x4_to_half2x2(uint32_t x, uint32_t& lo, uint32_t& hi) {
  asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
      : "=r"(lo), "=r"(hi)
      : "r"(x));
}

// Four E4M3 bytes as two operand pairs of T (fp16 directly; bf16 through float, exact).
template <typename T>
__device__ __forceinline__ void e4m3x4_to_pairs(uint32_t x, uint32_t& lo, uint32_t& hi) {
  e4m3x4_to_half2x2(x, lo, hi);
  if constexpr (!std::is_same_v<T, __half>) {
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&lo));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&hi));
    lo = pack2<T>(a.x, a.y);
    hi = pack2<T>(b.x, b.y);
  }
}

// Bytes j and j + 1 (j even) of rows a and b as two fp16 operand pairs, (a_j, b_j) and
// (a_j+1, b_j+1): one byte permute for both.
__device__ __forceinline__ void e4m3_rows_to_half2x2(uint32_t a, uint32_t b, int j, uint32_t& pj, uint32_t& pj1) {
  const uint32_t four = __byte_perm(a, b, static_cast<unsigned>(j | (j + 4) << 4 | (j + 1) << 8 | (j + 5) << 12));
  e4m3x4_to_half2x2(four, pj, pj1);
}

// Lane t's D / 16 words of FP8 key row r of a stage (Smem S's layout): word kk holds dims
// key_dim<D>(t, kk) .. + 3 (rollout/key_order.h: the scores' order of the head dims).
template <typename S, int D>
__device__ __forceinline__ void load_key_words(const uint8_t* ks, int r, int t, uint32_t (&w)[D / 16]) {
  if constexpr (D >= 64) {
#pragma unroll
    for (int c = 0; c < D / 64; ++c) {
      const uint4 v = *reinterpret_cast<const uint4*>(ks + S::at(r, rollout::key_dim<D>(t, 4 * c)));
      w[4 * c] = v.x;
      w[4 * c + 1] = v.y;
      w[4 * c + 2] = v.z;
      w[4 * c + 3] = v.w;
    }
  } else if constexpr (D == 32) {
    const uint2 v = *reinterpret_cast<const uint2*>(ks + S::at(r, rollout::key_dim<D>(t, 0)));
    w[0] = v.x;
    w[1] = v.y;
  } else {
    w[0] = *reinterpret_cast<const uint32_t*>(ks + S::at(r, rollout::key_dim<D>(t, 0)));
  }
}

// D = A B + D for one m16n8k16 tile (A row-major 16x16, B "col" 16x8, fp32 accumulators).
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two 8x8 matrices of 16-bit elements, transposed on the way (the B operand from row-major V).
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t& r0, uint32_t& r1, const void* row) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(s));
}

// Shared-memory layout of one block: kStages tiles of K and V rows, then the scores.
// The 8 rows an MMA fragment (or ldmatrix) touches at once must fall in different banks. Two ways:
//   - kDeep = false: two stages, rows padded by 16 bytes;
//   - kDeep = true (an FP8 cache with head_dim 128 only: rows of exactly 128 bytes, 8 chunks of 16):
//     three stages, rows unpadded, chunk c of row r stored at chunk c ^ (r % 8). Why: the FP8
//     cache's blocks were bound by the bytes they keep in flight, one tile ahead of the one they
//     compute (5 blocks of 16 KB per multiprocessor against the bf16 cache's 3 of 32 KB). Two
//     tiles ahead needs a third stage; without the padding a block still fits 4 to a
//     multiprocessor (51 KB each), the occupancy a batch of 64 needs for one wave at one split.
//     (A fourth stage, 3 blocks of 68 KB, was slower than two at every shape timed on an H100: 0.69-0.96x.)
// Every access goes through at(row, element): a 16-byte copy moves one whole chunk, and every
// load reads within one chunk, so the swizzle applies per element.
template <typename T, typename C, int D, int R, bool kDeep = false>
struct Smem {
  static constexpr int kStages = kDeep ? 3 : 2;
  static constexpr int kPer = 16 / static_cast<int>(sizeof(C));  // elements per 16-byte chunk
  static_assert(!kDeep || (sizeof(C) == 1 && D == 128), "the swizzled layout has 8 chunks a row");
  static constexpr int kRow = kDeep ? D : D + kPer;  // cache row stride, elements
  static constexpr int kPRow = kTileK + 4;           // p row stride, floats
  C k[kStages][kTileK * kRow];
  C v[kStages][kTileK * kRow];
  float p[R][kPRow];  // scores, then probabilities (rows past the block's zero: the PV MMA's padding)
  float m[R], l[R], alpha[R];
  // Offset of element e of key row r within a stage.
  static __device__ __forceinline__ int at(int r, int e) {
    if constexpr (kDeep)
      return r * kRow + (((e / kPer) ^ (r & 7)) * kPer) + e % kPer;
    else
      return r * kRow + e;
  }
};

// T: the dtype of q and the output; C: the cache's element (T, or uint8_t holding E4M3); R: query
// rows per block, which also says the pass. g = Hq / Hkv <= 8.
//   R = 8: block (b, h, z) serves the g heads of KV head h for sequence b over split z of its keys
//     [prefix_len(b), context_len(b)) (prefix_len 0 without a chunk table);
//   R = 16, the prefix pass: block (c, h, z) serves the g heads of every member of chunk c over
//     split z of the chunk's shared keys [0, chunk_len(c)), through its first member's block table.
// Partial states go to slot z (first pass) or a.splits + z (prefix pass) of each row.
// kHalfMma (an FP8 cache only, PagedDecodeArgs::fp8_half_mma): both MMAs in fp16, the cache's
// E4M3 bytes widened by one conversion per pair, q converted once per block, and each lane's V
// bytes read as one word per key row (see the queries and the P V step).
// kDeep (an FP8 cache with head_dim 128, PagedDecodeArgs::fp8_three_stages): Smem's three-stage
// swizzled layout.
template <typename T, typename C, int D, int R, bool kHalfMma = false, bool kDeep = false>
__global__ void __launch_bounds__(kThreads) paged_decode_kernel(const PagedDecodeArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  constexpr bool prefix_pass = R > 8;
  using S = Smem<T, C, D, R, kDeep>;
  constexpr int kStages = S::kStages;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  S& sm = *reinterpret_cast<S*>(smem_raw);
  constexpr int kRowChunks = D * static_cast<int>(sizeof(C)) / 16;  // 16-byte copies per cache row
  constexpr int kNT = D / 8;                                        // output n-tiles (8 dims each)
  constexpr int kNTW = kNT >= kWarps ? kNT / kWarps : 1;            // n-tiles per warp
  constexpr int kNQ = R / 8;                                        // query-row n-tiles of the scores
  static_assert(kRowChunks >= 1 && D % 16 == 0, "head_dim a multiple of 16");
  static_assert(R == 8 || R == 16, "8 or 16 query rows per block");
  static_assert(!kHalfMma || sizeof(C) == 1, "fp16 MMAs read an FP8 cache");
  using MT = std::conditional_t<kHalfMma, __half, T>;  // the MMAs' operand type
  constexpr bool kWideK = sizeof(C) == 1;               // an FP8 cache: keys by load_key_words

  const int b = blockIdx.x, h = blockIdx.y, z = blockIdx.z;
  const int splits = gridDim.z;                                     // of this pass
  const int slots = static_cast<int>(a.splits + a.prefix_splits);   // partial states per row (1: none)
  const int slot = prefix_pass ? static_cast<int>(a.splits) + z : z;
  const int G = static_cast<int>(a.num_q_heads / a.num_kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t cw = a.chunk_members + 2;  // chunk table row width (rollout/shared_prefix.h)
  const int32_t* crow = prefix_pass ? a.chunks + b * cw : nullptr;  // the chunk's row of the table
  // The block's query rows: row r < nrows is head r % G of KV head h of sequence seq(r / G); the
  // keys [begin, end_all) of sequence `lead`'s block table.
  int nrows = G, lead = b, begin = 0, end_all;
  if (prefix_pass) {
    int members = 0;
    while (members < a.chunk_members && crow[members] >= 0) ++members;
    if (members == 0) return;  // a chunk past the count: no rows
    nrows = members * G;
    lead = crow[0];
    end_all = crow[a.chunk_members];
  } else {
    begin = a.chunks != nullptr ? a.chunks[b * cw + a.chunk_members + 1] : 0;
    end_all = a.context_lens[b];
  }
  const int64_t head0 = static_cast<int64_t>(b) * a.num_q_heads + static_cast<int64_t>(h) * G;  // first pass: row 0
  const auto qrow = [&](int r) -> int64_t {  // the row's index in q and out, [B * Hq]
    if constexpr (prefix_pass)
      return static_cast<int64_t>(crow[r / G]) * a.num_q_heads + static_cast<int64_t>(h) * G + r % G;
    else
      return head0 + r;
  };
  // Fragment coordinates (PTX ISA, mma.m16n8k16): rows lane / 4 and + 8, column pairs 2 * (lane % 4).
  const int fr = lane / 4, fc = 2 * (lane % 4);
  // The queries as the scores' B operand (B[k][n] = q[row n][dim k]), held in registers for the
  // whole block; rows >= nrows are zero. They enter the MMA as stored (kHalfMma: in fp16, below);
  // the softmax scale (and an FP8 cache's k_scale: keys are stored / k_scale) multiplies the
  // scores. Read, with the scales, before anything waits on a load (the context length, the
  // block table), so that their latencies overlap: waiting on them alone was a block's largest
  // stall before its first tile. A block with no keys reads them for nothing.
  const T* q = static_cast<const T*>(a.q);
  // Row nt * 8 + fr; dims kk * 16 + fc, +1 and + 8, +9, or (kWideK) key_dim(fc / 2, kk) .. + 3.
  uint32_t qf[D / 16][kNQ][2];
#pragma unroll
  for (int nt = 0; nt < kNQ; ++nt) {
    const int r = nt * 8 + fr;
    const T* row = r < nrows ? q + qrow(r) * D : nullptr;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int d0 = kWideK ? rollout::key_dim<D>(fc / 2, kk) : kk * 16 + fc;
      const int d1 = kWideK ? d0 + 2 : d0 + 8;
      qf[kk][nt][0] = row != nullptr ? *reinterpret_cast<const uint32_t*>(row + d0) : 0u;
      qf[kk][nt][1] = row != nullptr ? *reinterpret_cast<const uint32_t*>(row + d1) : 0u;
    }
  }
  const float kscale = a.k_scale != nullptr ? *a.k_scale : 1.0f;
  const float vscale = a.v_scale != nullptr ? *a.v_scale : 1.0f;
  // Chunks of whole tiles; a short range uses fewer splits (at least one tile each).
  const int keys = end_all - begin;
  const int active = max(1, min(splits, (keys + kTileK - 1) / kTileK));
  const int chunk = ((keys + active - 1) / active + kTileK - 1) / kTileK * kTileK;
  const int start = begin + z * chunk, end = min(end_all, start + chunk);

  if (start >= end) {
    if (slots > 1) {
      if (tid < nrows) {
        float* ml = a.part_ml + (qrow(tid) * slots + slot) * 2;
        ml[0] = -INFINITY;
        ml[1] = 0.0f;
      }
    } else {  // no keys at all (outside the contract): a defined output
      T* out = static_cast<T*>(a.out);
      for (int i = tid; i < G * D; i += kThreads) out[qrow(0) * D + i] = from_float<T>(0.0f);
    }
    return;
  }

  const void* k_base = a.cache_bases != nullptr ? a.cache_bases[0] : a.k_cache;
  const void* v_base = a.cache_bases != nullptr ? a.cache_bases[1] : a.v_cache;
  const C* kc = static_cast<const C*>(k_base) + static_cast<int64_t>(h) * D;
  const C* vc = static_cast<const C*>(v_base) + static_cast<int64_t>(h) * D;
  const uint32_t row_stride = static_cast<uint32_t>(a.num_kv_heads * D);  // elements between consecutive slots
  const int32_t* table = a.block_tables + static_cast<int64_t>(lead) * a.table_stride;
  const int tiles = (end - start + kTileK - 1) / kTileK;
  // Key position -> (block, offset in it), 32-bit: slots and positions stay below 2^31.
  const rollout::FastDivmod per_block(static_cast<uint32_t>(a.block_size));
  // Each thread copies one 16-byte chunk (e_own) of rows r_first, + kRowStep, ... of every tile.
  constexpr int kRowStep = kThreads / kRowChunks;                  // rows one pass of the block covers
  constexpr int kRowsPer = (kTileK + kRowStep - 1) / kRowStep;     // rows per thread per tile
  static_assert(kThreads % kRowChunks == 0, "whole rows per pass");
  const int r_first = tid / kRowChunks, e_own = (tid % kRowChunks) * S::kPer;
  const C* k_own = kc + e_own;
  const C* v_own = vc + e_own;
  // The block-table entries of a tile's rows are read one tile before its copies start: a copy's
  // address waits on its entry, and where lookup and copies were one step, that wait was a
  // quarter of the FP8 cache's stall samples at batch 256 (Nsight Compute, docs/BENCHMARKS.md).
  // lookup(i) leaves tile i's entries (and offsets in their blocks) in these registers; issue(i)
  // starts its copies from them.
  uint32_t entry[kRowsPer], in_block[kRowsPer];
  auto lookup = [&](int i) {
    if (i >= tiles) return;
    const int t0 = start + i * kTileK, n = min(kTileK, end - t0);
#pragma unroll
    for (int k = 0; k < kRowsPer; ++k) {
      const int r = r_first + k * kRowStep;
      entry[k] = 0;
      in_block[k] = 0;
      if (r < n) {
        uint32_t blk;
        per_block.divmod(static_cast<uint32_t>(t0 + r), blk, in_block[k]);
        entry[k] = static_cast<uint32_t>(table[blk]);
      }
    }
  };
  // Starts the copies of tile i into its stage (K and V rows, 16 bytes per copy) as one group.
  // V rows past the range are zeroed: P is 0 there, but 0 * (stale NaN bits) is not.
  auto issue = [&](int i) {
    if (i < tiles) {
      const int t0 = start + i * kTileK, n = min(kTileK, end - t0);
      const int st = i % kStages;
#pragma unroll
      for (int k = 0; k < kRowsPer; ++k) {
        const int r = r_first + k * kRowStep;
        const int at = S::at(r, e_own);
        if (r < n) {
          const int64_t off = static_cast<int64_t>(entry[k] * per_block.divisor + in_block[k]) * row_stride;
          cp_async16(sm.k[st] + at, k_own + off);
          cp_async16(sm.v[st] + at, v_own + off);
        } else if (kRowsPer * kRowStep == kTileK || r < kTileK) {
          *reinterpret_cast<uint4*>(sm.v[st] + at) = make_uint4(0, 0, 0, 0);
        }
      }
    }
    cp_async_commit();  // possibly empty: the wait_group counts stay uniform
  };
  // kStages - 1 tiles in flight ahead of the one computed, and the next tile's entries read.
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    lookup(i);
    issue(i);
  }
  lookup(kStages - 1);

  // kHalfMma: q in fp16 (exact for bf16 values in fp16's normal range; smaller ones round at
  // 2^-24, nothing next to the scores' other terms), divided by qmul, a power of two that keeps
  // it finite: 1 unless |q| exceeds 32768. The scale below multiplies qmul back. Every warp holds
  // all of q, so each finds the same qmul. Non-finite values are left out of the maximum: they
  // break their own row, as in q's dtype, not the block's other rows.
  float qmul = 1.0f;
  if constexpr (kHalfMma && !std::is_same_v<T, __half>) {
    uint32_t* pairs = &qf[0][0][0];  // all of this lane's q pairs
    constexpr int kPairs = D / 16 * kNQ * 2;
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      const float2 f = bf16x2_to_float2(pairs[i]);
      if (isfinite(f.x)) amax = fmaxf(amax, fabsf(f.x));
      if (isfinite(f.y)) amax = fmaxf(amax, fabsf(f.y));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (amax > 32768.0f) qmul = ldexpf(1.0f, static_cast<int>(ceilf(log2f(amax / 32768.0f))));
    const float inv = 1.0f / qmul;
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      const float2 f = bf16x2_to_float2(pairs[i]);
      pairs[i] = pack2<__half>(f.x * inv, f.y * inv);
    }
  }
  const float qscale = a.scale * kLog2e * kscale * qmul;
  for (int i = tid; i < R * S::kPRow; i += kThreads) (&sm.p[0][0])[i] = 0.0f;
  if (tid < R) {
    sm.m[tid] = -INFINITY;
    sm.l[tid] = 0.0f;
  }
  float acc[kNTW][4];  // O[row][d]: rows fr, fr + 8; dims of this warp's n-tiles
#pragma unroll
  for (int j = 0; j < kNTW; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.0f;
  const bool pv_warp = warp * kNTW < kNT;  // D = 16: two warps hold all the dims

  for (int i = 0; i < tiles; ++i) {
    issue(i + kStages - 1);       // its stage was last read in iteration i - 1 (barrier at the end)
    lookup(i + kStages);          // used by the next iteration's issue: its loads fly meanwhile
    cp_async_wait<kStages - 1>();  // tile i's group has landed (this thread's copies)
    __syncthreads();              // and everyone's; also q, p's padding, m and l on the first tile
    const int st = i % kStages;
    const int n = min(kTileK, end - (start + i * kTileK));

    // Scores: warp w, keys 16w..16w+15 of the tile, all rows. S = K Q^T on the tensor cores; one
    // K fragment serves the R / 8 query n-tiles.
    if (16 * warp < n) {
      float s[kNQ][4];
#pragma unroll
      for (int nt = 0; nt < kNQ; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
      const C* ks = sm.k[st];
      const int r0 = 16 * warp + fr;  // and r0 + 8
      if constexpr (kWideK) {
        uint32_t w0[D / 16], w8[D / 16];  // rows r0, r0 + 8: word kk = dims key_dim(t, kk) .. + 3
        load_key_words<S, D>(ks, r0, fc / 2, w0);
        load_key_words<S, D>(ks, r0 + 8, fc / 2, w8);
        // Odd steps accumulate apart (s_odd), so that two MMA chains of D / 32 run side by side
        // instead of one of D / 16, each MMA waiting on the one before.
        float s_odd[kNQ][4];
#pragma unroll
        for (int nt = 0; nt < kNQ; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s_odd[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t af[4];
          e4m3x4_to_pairs<MT>(w0[kk], af[0], af[2]);
          e4m3x4_to_pairs<MT>(w8[kk], af[1], af[3]);
#pragma unroll
          for (int nt = 0; nt < kNQ; ++nt)
            mma16816<MT>(kk % 2 == 0 ? s[nt] : s_odd[nt], af, qf[kk][nt][0], qf[kk][nt][1]);
        }
#pragma unroll
        for (int nt = 0; nt < kNQ; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[nt][e] += s_odd[nt][e];
      } else {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          const int e = kk * 16 + fc;
          uint32_t af[4];
          af[0] = load_pair(ks + S::at(r0, e));
          af[1] = load_pair(ks + S::at(r0 + 8, e));
          af[2] = load_pair(ks + S::at(r0, e + 8));
          af[3] = load_pair(ks + S::at(r0 + 8, e + 8));
#pragma unroll
          for (int nt = 0; nt < kNQ; ++nt) mma16816<MT>(s[nt], af, qf[kk][nt][0], qf[kk][nt][1]);
        }
      }
      // s[nt]: (key fr, rows nt * 8 + fc, +1), (key fr + 8, same rows).
#pragma unroll
      for (int nt = 0; nt < kNQ; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = 16 * warp + fr + (e >= 2 ? 8 : 0), r = nt * 8 + fc + (e & 1);
          if (r < nrows && key < n) sm.p[r][key] = s[nt][e] * qscale;
        }
    }
    __syncthreads();

    // Online softmax: one warp per row; keys past n get probability 0.
    for (int g = warp; g < nrows; g += kWarps) {
      // Lane's keys lane + 32 k, read once (a fixed count: no loop over n to branch around).
      float sc[kTileK / 32], mx = -INFINITY;
#pragma unroll
      for (int k = 0; k < kTileK / 32; ++k) {
        sc[k] = sm.p[g][lane + 32 * k];
        if (lane + 32 * k < n) mx = fmaxf(mx, sc[k]);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = sm.m[g], m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < kTileK / 32; ++k) {
        const float p = lane + 32 * k < n ? exp2f(sc[k] - m_new) : 0.0f;
        sm.p[g][lane + 32 * k] = p;
        sum += p;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0) {
        sm.alpha[g] = exp2f(m_old - m_new);  // 0 on the first tile (m_old = -inf)
        sm.l[g] = sm.l[g] * sm.alpha[g] + sum;
        sm.m[g] = m_new;
      }
    }
    __syncthreads();

    // O[row][d] = alpha O + P V: warp w owns n-tiles [w * kNTW, (w + 1) * kNTW) of the dims:
    // column n of its n-tile j is dim dim_of(j, n). In q's dtype those are 8 consecutive dims per
    // n-tile (V's B fragments come from ldmatrix.trans). With kHalfMma the n-tiles interleave
    // instead, dim (8 w + n) kNTW + j, so the kNTW values a lane feeds its n-tiles (column n = fr)
    // are kNTW consecutive bytes of a key row: one shared-memory load per row, one byte permute
    // per two pairs and one conversion per pair, where widening each byte on its own (and, into
    // bf16, through float) cost ~3x the instructions. E4M3 is exact in fp16, and P in [0, 1]
    // loses less in fp16 than in bf16.
    if (pv_warp) {
      const float alpha0 = fr < nrows ? sm.alpha[fr] : 0.0f;
      float alpha1 = 0.0f;
      if constexpr (R > 8) alpha1 = fr + 8 < nrows ? sm.alpha[fr + 8] : 0.0f;
#pragma unroll
      for (int j = 0; j < kNTW; ++j) {  // with R = 8, rows fr + 8 (acc[j][2..3]) are padding, never emitted
        acc[j][0] *= alpha0;
        acc[j][1] *= alpha0;
        acc[j][2] *= alpha1;
        acc[j][3] *= alpha1;
      }
#pragma unroll
      for (int kk = 0; kk < kTileK; kk += 16) {
        uint32_t pf[4];  // A = P[row][key]: rows fr (pf[0], pf[2]) and fr + 8 (pf[1], pf[3]; zero when R = 8)
        const float2 p00 = *reinterpret_cast<const float2*>(&sm.p[fr][kk + fc]);
        const float2 p01 = *reinterpret_cast<const float2*>(&sm.p[fr][kk + fc + 8]);
        pf[0] = pack2<MT>(p00.x, p00.y);
        pf[2] = pack2<MT>(p01.x, p01.y);
        if constexpr (R > 8) {
          const float2 p10 = *reinterpret_cast<const float2*>(&sm.p[fr + 8][kk + fc]);
          const float2 p11 = *reinterpret_cast<const float2*>(&sm.p[fr + 8][kk + fc + 8]);
          pf[1] = pack2<MT>(p10.x, p10.y);
          pf[3] = pack2<MT>(p11.x, p11.y);
        } else {
          pf[1] = pf[3] = 0u;
        }
        if constexpr (kHalfMma) {
          // Key rows kk + fc, +1 (b0) and + 8, + 9 (b1); bytes of dims (8 w + fr) kNTW + j.
          constexpr int kWords = (kNTW + 3) / 4;
          const C* vs = sm.v[st];
          const int r = kk + fc, e = (warp * 8 + fr) * kNTW;
          uint32_t w0[kWords], w1[kWords], w8[kWords], w9[kWords];
          load_bytes<kNTW>(vs + S::at(r, e), w0);
          load_bytes<kNTW>(vs + S::at(r + 1, e), w1);
          load_bytes<kNTW>(vs + S::at(r + 8, e), w8);
          load_bytes<kNTW>(vs + S::at(r + 9, e), w9);
#pragma unroll
          for (int j = 0; j < kNTW; j += 2) {  // n-tiles j and j + 1 (kNTW = 1: a zero byte's pair unused)
            uint32_t b0[2], b1[2];
            e4m3_rows_to_half2x2(w0[j / 4], w1[j / 4], j % 4, b0[0], b0[1]);
            e4m3_rows_to_half2x2(w8[j / 4], w9[j / 4], j % 4, b1[0], b1[1]);
            mma16816<__half>(acc[j], pf, b0[0], b1[0]);
            if (j + 1 < kNTW) mma16816<__half>(acc[j + 1], pf, b0[1], b1[1]);
          }
        } else {
#pragma unroll
          for (int j = 0; j < kNTW; ++j) {
            const int d0 = (warp * kNTW + j) * 8;
            uint32_t b0, b1;  // B = V[key][d]: keys kk + fc, +1 (b0) and + 8 (b1) of dim d0 + fr
            const C* vs = sm.v[st];
            if constexpr (sizeof(C) == 2) {
              // lanes 0-7 address rows kk..kk+7, lanes 8-15 rows kk+8..kk+15 (dims d0..d0+7)
              ldmatrix_x2_trans(b0, b1, vs + S::at(kk + (lane & 15), d0));
            } else {
              const int r = kk + fc, e = d0 + fr;
              b0 = load_split_pair<T, C>(vs + S::at(r, e), vs + S::at(r + 1, e));
              b1 = load_split_pair<T, C>(vs + S::at(r + 8, e), vs + S::at(r + 9, e));
            }
            mma16816<T>(acc[j], pf, b0, b1);
          }
        }
      }
    }
    __syncthreads();  // the next iteration overwrites p and refills this tile's stage
  }
  cp_async_wait<0>();  // no copy outlives the block (the trailing group is empty)

  // Out: normalised, or (slots > 1) the unnormalised chunk with its (max, sum) for the merge.
  // acc[j][0..1]: row fr, columns fc, fc + 1 of n-tile j; acc[j][2..3]: row fr + 8.
  if (pv_warp) {
#pragma unroll
    for (int j = 0; j < kNTW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int g = fr + (e >= 2 ? 8 : 0), n = fc + (e & 1);
        const int d = kHalfMma ? (warp * 8 + n) * kNTW + j : (warp * kNTW + j) * 8 + n;  // dim_of(j, n)
        if (g >= nrows) continue;
        const int64_t row = qrow(g);
        if (slots == 1)
          static_cast<T*>(a.out)[row * D + d] = from_float<T>(acc[j][e] * (vscale / sm.l[g]));
        else
          a.part_acc[(row * slots + slot) * D + d] = acc[j][e] * vscale;
      }
  }
  if (slots > 1 && tid < nrows) {
    float* ml = a.part_ml + (qrow(tid) * slots + slot) * 2;
    ml[0] = sm.m[tid];
    ml[1] = sm.l[tid];
  }
}

// Merges the partial states of one query row (split-K chunks, and with shared prefixes the prefix
// pass's chunks): out = sum_z 2^(m_z - M) acc_z / sum_z 2^(m_z - M) l_z.
// The splits' weights are found once, in parallel, into shared memory (the first version walked
// the splits serially per dimension: ~10 us per layer at batch 1, where most splits are empty).
// Tried and removed (twelfth session): this merge writing an FP8 o_proj's input directly (head_dim
// 128: one head is one 1x128 group, so the block that merges a head found its amax and wrote its
// bytes and scale), bit for bit o_proj's own quantization, one kernel fewer per layer. FP8 + FP8 KV,
// Qwen3-8B shape, H100, same call: 1.004x tokens/s at batch 1, 0.997x at 64, 0.998x at 256 --
// under dependent launch the quantization kernel it replaced cost ~0.5 us a layer, not the ~2.9
// the profile's overlap-credited column gave it (docs/BENCHMARKS.md). Also tried (seventeenth
// session): this kernel letting the next grid launch before its wait, so that o_proj's GEMV would
// load weights under attention's tail (pdl::begin(true), as the quantizing kernels do): 0.983x /
// 0.980x / 0.977x tokens/s at batch 1 / 8 / 64 against neither, H100, same call; not kept. And
// each thread loading 16 splits' partial values (unconditionally, index clamped) before adding
// them in the same order (bit for bit the loop below, GPU-tested; ae51692), because the profile
// gave this kernel ~9.7 us a call at batch 1 with 64 splits, which looked like one L2 round trip
// per split: 0.975x FP8 + FP8 KV and 0.987x BF16 tokens/s at batch 1 (graph step +0.11 ms in
// both), ~1.00x at 4 and 16, H100, same call; removed. Likely why: at batch 1 only ~10 of the 64
// splits hold keys (64-key tiles), and the unconditional loads read the empty splits' partials,
// never written and so not in L2, which the loop below skips (it already issues four loads at a
// time). Loads predicated on the weight were not tried: with ~10 live splits little is left.
template <typename T>
__global__ void paged_decode_merge_kernel(const PagedDecodeArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  constexpr int kMaxSplits = 64;  // paged_decode_splits' cap
  __shared__ float w_s[kMaxSplits];
  __shared__ float inv_s;
  const int64_t row = blockIdx.x;  // b * Hq + head
  const int splits = static_cast<int>(a.splits + a.prefix_splits), D = static_cast<int>(a.head_dim);
  const float* ml = a.part_ml + row * splits * 2;
  if (threadIdx.x < 32) {  // warp 0 (blockDim >= 32): the max over the non-empty splits, then each split's weight
    const int lane = threadIdx.x;
    float m[2], l[2], M = -INFINITY;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int z = lane + 32 * k;
      m[k] = z < splits ? ml[2 * z] : -INFINITY;
      l[k] = z < splits ? ml[2 * z + 1] : 0.0f;
      if (l[k] > 0.0f) M = fmaxf(M, m[k]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    float L = 0.0f;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int z = lane + 32 * k;
      const float w = l[k] > 0.0f ? exp2f(m[k] - M) : 0.0f;
      if (z < kMaxSplits) w_s[z] = w;
      L += w * l[k];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
    if (lane == 0) inv_s = L > 0.0f ? 1.0f / L : 0.0f;
  }
  __syncthreads();
  T* out = static_cast<T*>(a.out);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float s = 0.0f;
    for (int z = 0; z < splits; ++z)
      if (w_s[z] != 0.0f) s += w_s[z] * a.part_acc[(row * splits + z) * D + d];
    out[row * D + d] = from_float<T>(s * inv_s);
  }
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <typename T, typename C, int D, int R, bool kHalfMma, bool kDeep>
void launch_kernel(const PagedDecodeArgs& a, cudaStream_t stream) {
  const int64_t splits = R > 8 ? a.prefix_splits : a.splits;
  const dim3 grid(static_cast<unsigned>(a.batch), static_cast<unsigned>(a.num_kv_heads), static_cast<unsigned>(splits));
  constexpr int bytes = static_cast<int>(sizeof(Smem<T, C, D, R, kDeep>));
  constexpr auto kernel = paged_decode_kernel<T, C, D, R, kHalfMma, kDeep>;
  // Above 48 KB a kernel must opt in (once per kernel; not a stream operation, so allowed while
  // a CUDA graph is being captured).
  static const cudaError_t opt_in = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (opt_in != cudaSuccess) throw std::runtime_error(std::string("paged_decode_kernel: ") + cudaGetErrorString(opt_in));
  pdl::launch(kernel, grid, kThreads, bytes, stream, a);
}

template <typename T, typename C, int D, bool kHalfMma = false, bool kDeep = false>
void launch_passes(const PagedDecodeArgs& a, cudaStream_t stream) {
  launch_kernel<T, C, D, 8, kHalfMma, kDeep>(a, stream);
  check_launch("paged_decode_kernel");
  if (a.chunks != nullptr) {
    launch_kernel<T, C, D, kMaxRows, kHalfMma, kDeep>(a, stream);
    check_launch("paged_decode_kernel (shared prefixes)");
  }
}

// An FP8 cache: fp16 or q's-dtype MMAs, and (head_dim 128) two or three stages.
template <typename T, int D, bool kHalfMma>
void launch_fp8(const PagedDecodeArgs& a, cudaStream_t stream) {
  if constexpr (D == 128) {
    if (a.fp8_three_stages) return launch_passes<T, uint8_t, D, kHalfMma, true>(a, stream);
  }
  launch_passes<T, uint8_t, D, kHalfMma>(a, stream);
}

template <typename T, int D>
void launch_d(const PagedDecodeArgs& a, cudaStream_t stream) {
  if (a.fp8_kv && a.fp8_half_mma)
    launch_fp8<T, D, true>(a, stream);
  else if (a.fp8_kv)
    launch_fp8<T, D, false>(a, stream);
  else
    launch_passes<T, T, D>(a, stream);
  if (a.splits + a.prefix_splits > 1) {
    // At least a whole warp: the merge's first step is a warp over the splits.
    const int threads = D < 32 ? 32 : (D < 128 ? D : 128);
    pdl::launch(paged_decode_merge_kernel<T>, static_cast<unsigned>(a.batch * a.num_q_heads), threads, 0, stream, a);
    check_launch("paged_decode_merge_kernel");
  }
}

template <typename T>
void launch(const PagedDecodeArgs& a, cudaStream_t stream) {
  switch (a.head_dim) {
    case 16: return launch_d<T, 16>(a, stream);
    case 32: return launch_d<T, 32>(a, stream);
    case 64: return launch_d<T, 64>(a, stream);
    case 128: return launch_d<T, 128>(a, stream);
    case 256: return launch_d<T, 256>(a, stream);
    default: throw std::invalid_argument("paged_decode_attention: unsupported head_dim " + std::to_string(a.head_dim));
  }
}

}  // namespace

bool paged_decode_supports(int64_t head_dim, int64_t group) {
  const bool d = head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
  return d && group >= 1 && group <= 8;  // larger groups: the engine's reference path
}

int64_t paged_decode_splits(int64_t batch, int64_t num_kv_heads, int sm_count, bool round_down) {
  const int64_t blocks = batch * num_kv_heads, target = 4 * static_cast<int64_t>(sm_count);
  const int64_t want = round_down ? target / blocks : (target + blocks - 1) / blocks;
  return want < 1 ? 1 : (want > 64 ? 64 : want);
}

void paged_decode_attention(const PagedDecodeArgs& a, cudaStream_t stream) {
  if (a.batch == 0) return;
  if (!paged_decode_supports(a.head_dim, a.num_q_heads / a.num_kv_heads) || a.num_q_heads % a.num_kv_heads != 0)
    throw std::invalid_argument("paged_decode_attention: unsupported shape");
  if (a.chunks != nullptr &&
      (a.chunk_members < 1 || a.chunk_members * (a.num_q_heads / a.num_kv_heads) > kMaxRows || a.prefix_splits < 1))
    throw std::invalid_argument("paged_decode_attention: a shared-prefix chunk has more query rows than a block serves");
  if (a.splits < 1 || a.prefix_splits < 0 || (a.chunks == nullptr && a.prefix_splits != 0) ||
      a.splits + a.prefix_splits > 64)
    throw std::invalid_argument("paged_decode_attention: 1 to 64 partial states per row");
  if (a.bf16)
    launch<__nv_bfloat16>(a, stream);
  else
    launch<__half>(a, stream);
}

}  // namespace fp8rl::cuda
