// The paged decode kernel alone: an older build ("old", from BASE) and this tree's ("new") on the
// same caches, Qwen3-8B's attention shape (8 KV heads, 4 query heads each, head_dim 128, 16-token
// blocks in shuffled order), bf16 and FP8 caches, several batch sizes and split counts. Median us
// per launch (kernel + split merge), rotating over enough layers' caches that L2 never holds the
// layer being read; "stream read" is a plain 16-byte-load kernel over the same buffers, the
// bandwidth a perfect kernel would see, and "the attention's bytes gathered" reads just the bytes
// the kernel reads, row by row through the block table, with nothing else to do: what the cache's
// layout allows (and "if heads were block-major": what it would allow if each block stored each
// head's rows together). maxdiff: the largest |new - old| of the outputs (bf16).
// With an FP8 cache, "old, 3 stages" and "new, 3 stages" set PagedDecodeArgs::fp8_three_stages.
// Built by build.sh beside this file. Filters for a profiler (each optional): PD_B=<batch>,
// PD_KV=bf16|fp8, PD_VAR=<variant name>; e.g. PD_B=256 PD_KV=fp8 PD_VAR="new, 3 stages".
#include "rollout/cuda/rollout_kernels.h"
#include <cuda_bf16.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1); } } while (0)
using Fn = void (*)(const void*, cudaStream_t);
extern "C" void pd_old(const void*, cudaStream_t);
extern "C" void pd_new(const void*, cudaStream_t);
extern "C" int64_t pd_splits_new(int64_t batch, int64_t num_kv_heads, int sm_count, bool fp8_kv);  // the engine's choice
struct V { const char* name; Fn fn; bool three_stages; };
static V variants[] = {{"old", pd_old, false}, {"new", pd_new, false}, {"old, 3 stages", pd_old, true}, {"new, 3 stages", pd_new, true}};

__global__ void fill(uint16_t* p, int64_t n, uint32_t seed, bool fp8) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed; h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
    if (fp8) { p[i] = (uint16_t)(h & 0x3737u); }  // two E4M3 bytes of modest size, never NaN
    else { float f = ((h & 0xffff) / 65535.0f - 0.5f) * 4.0f; __nv_bfloat16 b = __float2bfloat16(f); p[i] = *(uint16_t*)&b; }
  }
}

__global__ void stream_read(const uint4* p, int64_t n, uint4* sink) {
  uint4 acc{0, 0, 0, 0};
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) { uint4 v = p[i]; acc.x ^= v.x; acc.y ^= v.y; acc.z ^= v.z; acc.w ^= v.w; }
  if (acc.x == 0x12345678u) *sink = acc;
}
// Exactly the attention's bytes in its order of addresses: sequence b, KV head h, key t -> that
// head's row (row_bytes) of slot table[b][t / bs] * bs + t % bs, in K and V, 16 bytes a thread,
// with no compute and no shared memory (so many blocks a multiprocessor): what the cache's
// layout (each head's row a slice of every slot) allows such reads, beside the stream read.
// head_major: the same bytes as if a block stored each head's bs rows together ([block][head][slot
// in block][dim], as FlashInfer's HND layout does) instead of each slot's heads together: what
// that layout would allow.
__global__ void gather_read(const uint8_t* k, const uint8_t* v, const int* table, int table_stride, const int* lens,
                            int bs, int row_bytes, int slot_bytes, bool head_major, uint4* sink) {
  const int heads = slot_bytes / row_bytes;
  const int b = blockIdx.x, h = blockIdx.y, chunks = row_bytes / 16, n = lens[b] * chunks;
  const int* tb = table + (int64_t)b * table_stride;
  uint4 acc{0, 0, 0, 0};
#pragma unroll 4
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int t = i / chunks, c = i % chunks;
    const int64_t off = head_major ? (((int64_t)tb[t / bs] * heads + h) * bs + t % bs) * row_bytes + c * 16
                                   : ((int64_t)tb[t / bs] * bs + t % bs) * slot_bytes + (int64_t)h * row_bytes + c * 16;
    const uint4 x = *reinterpret_cast<const uint4*>(k + off), y = *reinterpret_cast<const uint4*>(v + off);
    acc.x ^= x.x ^ y.x; acc.y ^= x.y ^ y.y; acc.z ^= x.z ^ y.z; acc.w ^= x.w ^ y.w;
  }
  if (acc.x == 0x12345678u) *sink = acc;
}

static bool wanted(const char* env, const std::string& value) {
  const char* v = std::getenv(env);
  return v == nullptr || value == v;
}
int main() {
  cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
  printf("device %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  const int D = 128, bs = 16;
  // prefix > 0: the shared-prefix pass too, chunks of 4 rows (16 MMA rows / 4 query heads) each
  // sharing their first `prefix` keys through the first member's table, with the engine's split
  // rule for that pass. With group = 0 the members do not share physical blocks as they do in the
  // engine (the two passes read as many bytes as the engine's would, all from DRAM); group = n:
  // the first prefix / bs table entries of each n consecutive rows are the same blocks, as the
  // engine's prefix caching makes a prompt's n samples' tables, so siblings' reads may hit L2;
  // pass = false: the plain kernel alone over such tables (what the engine runs by default).
  struct Case { int B; int ctx; bool jitter; bool fp8; std::vector<int> splits; bool perm = true; int hkv = 8; int prefix = 0;
                int group = 0; bool pass = true; };
  std::vector<Case> cases = {
    {1, 768, false, false, {0, 16}}, {16, 640, false, false, {0, 4}}, {64, 640, true, false, {0, 1, 2, 4}},
    {128, 640, true, false, {0, 1, 2}}, {256, 640, true, false, {0, 1}},
    {1, 768, false, true, {0}}, {16, 640, false, true, {0, 2, 4}}, {64, 640, true, true, {0, 1, 2, 4}},
    {128, 640, true, true, {0, 1, 2}}, {256, 640, true, true, {0, 1}}, {64, 2048, true, true, {0, 2}},
    {8, 8192, false, true, {0}},
    {64, 640, true, true, {0}, true, 8, 384}, {64, 640, true, false, {0}, true, 8, 384},
    // RL-shaped: 512-token prompts, 8 samples each, 0-256 tokens generated (against the unshared
    // batch-256 cases above).
    {256, 640, true, true, {0}, true, 8, 512}, {256, 640, true, false, {0}, true, 8, 512},
    // The same with the engine's tables (each prompt's blocks shared by its 8 samples): the plain
    // kernel, then with the prefix pass; then 2048-token prompts, whose blocks outgrow L2.
    {256, 640, true, true, {0}, true, 8, 512, 8, false}, {256, 640, true, true, {0}, true, 8, 512, 8, true},
    {256, 640, true, false, {0}, true, 8, 512, 8, false}, {256, 640, true, false, {0}, true, 8, 512, 8, true},
    {256, 2304, false, true, {0}, true, 8, 2048, 8, false}, {256, 2304, false, true, {0}, true, 8, 2048, 8, true},
    {64, 2048, true, false, {0, 2}}, {8, 8192, false, false, {0}}, {1, 8192, false, false, {0}}, {1, 8192, false, true, {0}},
  };
  cudaStream_t st; CK(cudaStreamCreate(&st));
  cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  std::mt19937 rng(1);
  for (const Case& c : cases) {
    if (!wanted("PD_B", std::to_string(c.B)) || !wanted("PD_KV", c.fp8 ? "fp8" : "bf16")) continue;
    const int Hkv = c.hkv, Hq = 4 * c.hkv;
    const int max_ctx = c.ctx + (c.jitter ? c.ctx / 5 : 0);
    const int blocks_per_seq = (max_ctx + bs - 1) / bs;
    const int64_t nblocks = (int64_t)c.B * blocks_per_seq;
    const int64_t slots = nblocks * bs;
    const int esz = c.fp8 ? 1 : 2;
    const int64_t layer_bytes = slots * Hkv * D * esz;  // one of K, V
    int layers = std::max<int64_t>(4, (int64_t)(400e6 / (2.0 * layer_bytes)) + 1);
    layers = std::min(layers, 64);
    std::vector<int> lens(c.B);
    int64_t total_keys = 0;
    for (int b = 0; b < c.B; ++b) { lens[b] = c.jitter ? c.ctx - c.ctx / 5 + (int)(rng() % (2 * (c.ctx / 5) + 1)) : c.ctx; lens[b] = std::min(lens[b], max_ctx); total_keys += lens[b]; }
    std::vector<int> perm(nblocks); for (int64_t i = 0; i < nblocks; ++i) perm[i] = (int)i; if (c.perm) std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int> table(perm);  // [B, blocks_per_seq]
    for (int b = 0; c.group > 0 && b < c.B; ++b)
      for (int j = 0; j < c.prefix / bs; ++j) table[(size_t)b * blocks_per_seq + j] = table[(size_t)(b - b % c.group) * blocks_per_seq + j];
    int *d_table, *d_lens; CK(cudaMalloc(&d_table, table.size() * 4)); CK(cudaMalloc(&d_lens, c.B * 4));
    CK(cudaMemcpy(d_table, table.data(), table.size() * 4, cudaMemcpyHostToDevice)); CK(cudaMemcpy(d_lens, lens.data(), c.B * 4, cudaMemcpyHostToDevice));
    constexpr int kMembers = 4;
    int* d_chunks = nullptr;
    if (c.prefix > 0 && c.pass) {  // rollout/shared_prefix.h's table: [B, M + 2]
      std::vector<int> chunks((size_t)c.B * (kMembers + 2), -1);
      const int nchunks = (c.B + kMembers - 1) / kMembers;
      for (int ch = 0; ch < c.B; ++ch) {
        int* row = &chunks[(size_t)ch * (kMembers + 2)];
        for (int m = 0; m < kMembers; ++m) row[m] = ch < nchunks && ch * kMembers + m < c.B ? ch * kMembers + m : -1;
        row[kMembers] = ch < nchunks ? c.prefix : 0;
        row[kMembers + 1] = c.prefix;  // every row's prefix_len (contexts are all longer)
      }
      CK(cudaMalloc(&d_chunks, chunks.size() * 4)); CK(cudaMemcpy(d_chunks, chunks.data(), chunks.size() * 4, cudaMemcpyHostToDevice));
    }
    std::vector<void*> kc(layers), vc(layers);
    for (int l = 0; l < layers; ++l) {
      CK(cudaMalloc(&kc[l], layer_bytes)); CK(cudaMalloc(&vc[l], layer_bytes));
      fill<<<1024, 256, 0, st>>>((uint16_t*)kc[l], layer_bytes / 2, 17 + l, c.fp8); fill<<<1024, 256, 0, st>>>((uint16_t*)vc[l], layer_bytes / 2, 91 + l, c.fp8);
    }
    void *q, *out, *ref; float *pacc, *pml, *ks;
    CK(cudaMalloc(&q, (int64_t)c.B * Hq * D * 2)); fill<<<256, 256, 0, st>>>((uint16_t*)q, (int64_t)c.B * Hq * D, 5, false);
    CK(cudaMalloc(&out, (int64_t)c.B * Hq * D * 2)); CK(cudaMalloc(&ref, (int64_t)c.B * Hq * D * 2));
    CK(cudaMalloc(&pacc, (int64_t)c.B * Hq * 64 * D * 4)); CK(cudaMalloc(&pml, (int64_t)c.B * Hq * 64 * 2 * 4));
    CK(cudaMalloc(&ks, 8)); float scales[2] = {0.05f, 0.07f}; CK(cudaMemcpy(ks, scales, 8, cudaMemcpyHostToDevice));
    const double kv_bytes = 2.0 * total_keys * Hkv * D * esz;
    {  // streaming read of whole layers: the bandwidth a perfect kernel would see
      uint4* sink; CK(cudaMalloc(&sink, 16));
      std::vector<float> t;
      for (int rep = 0; rep < 5; ++rep) {
        CK(cudaEventRecord(e0, st));
        for (int l = 0; l < layers; ++l) { stream_read<<<132 * 8, 512, 0, st>>>((const uint4*)kc[l], layer_bytes / 16, sink); stream_read<<<132 * 8, 512, 0, st>>>((const uint4*)vc[l], layer_bytes / 16, sink); }
        CK(cudaEventRecord(e1, st)); CK(cudaEventSynchronize(e1));
        float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); t.push_back(ms);
      }
      std::sort(t.begin(), t.end());
      printf("  [stream read: %.2f TB/s", 2.0 * layer_bytes * layers / (t[2] * 1e-3) / 1e12);
      for (bool head_major : {false, true}) {
        t.clear();
        for (int rep = 0; rep < 5; ++rep) {
          CK(cudaEventRecord(e0, st));
          for (int l = 0; l < layers; ++l)
            gather_read<<<dim3(c.B, Hkv), 256, 0, st>>>((const uint8_t*)kc[l], (const uint8_t*)vc[l], d_table, blocks_per_seq,
                                                        d_lens, bs, D * esz, Hkv * D * esz, head_major, sink);
          CK(cudaEventRecord(e1, st)); CK(cudaEventSynchronize(e1));
          float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); t.push_back(ms);
        }
        std::sort(t.begin(), t.end());
        printf(head_major ? "; if heads were block-major: %.2f TB/s" : "; the attention's bytes gathered: %.2f TB/s",
               kv_bytes * layers / (t[2] * 1e-3) / 1e12);
      }
      printf("]\n");
      cudaFree(sink);
    }
    for (int sp : c.splits) {
      const int64_t splits = sp ? sp : pd_splits_new(c.B, Hkv, prop.multiProcessorCount, c.fp8);
      fp8rl::cuda::PagedDecodeArgs a{};
      a.q = q; a.fp8_kv = c.fp8; a.k_scale = c.fp8 ? ks : nullptr; a.v_scale = c.fp8 ? ks + 1 : nullptr;
      a.block_tables = d_table; a.table_stride = blocks_per_seq; a.context_lens = d_lens; a.part_acc = pacc; a.part_ml = pml;
      a.batch = c.B; a.num_q_heads = Hq; a.num_kv_heads = Hkv; a.head_dim = D; a.block_size = bs; a.splits = splits;
      a.scale = 1.0f / std::sqrt((float)D); a.bf16 = true; a.fp8_half_mma = c.fp8;  // the engine's default
      if (c.prefix > 0 && c.pass) {  // the engine's rule (rollout/paged_attention.cpp, prefix_splits_for)
        a.chunks = d_chunks;
        a.chunk_members = kMembers;
        const int64_t chunks = (c.B + kMembers - 1) / kMembers;
        a.prefix_splits = std::min<int64_t>(pd_splits_new(chunks, Hkv, prop.multiProcessorCount, c.fp8), 64 - splits);
      }
      printf("B=%d Hkv=%d %s ctx~%d%s %s KV, splits %lld, %d layers, %.1f MB KV/launch", c.B, Hkv, c.perm ? "shuffled" : "in order", c.ctx, c.jitter ? "+-20%" : "", c.fp8 ? "fp8" : "bf16", (long long)splits, layers, kv_bytes / 1e6);
      if (c.prefix > 0 && c.group > 0) printf(", the first %d keys the same blocks in groups of %d", c.prefix, c.group);
      if (c.prefix > 0 && c.pass)
        printf(", shared prefix %d keys in chunks of %d, prefix splits %lld", c.prefix, kMembers, (long long)a.prefix_splits);
      if (c.prefix > 0) printf(" (TB/s: as if unshared)");
      printf(":");
      for (const V& v : variants) {
        if (v.three_stages && !c.fp8) continue;  // no effect on a bf16 cache
        if (!wanted("PD_VAR", v.name)) continue;
        // correctness against the old kernel on layer 0
        a.fp8_three_stages = false;
        a.k_cache = kc[0]; a.v_cache = vc[0]; a.out = ref; variants[0].fn(&a, st);
        a.fp8_three_stages = v.three_stages;
        a.out = out; v.fn(&a, st); CK(cudaStreamSynchronize(st));
        std::vector<__nv_bfloat16> h1((size_t)c.B * Hq * D), h2(h1.size());
        CK(cudaMemcpy(h1.data(), ref, h1.size() * 2, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(h2.data(), out, h2.size() * 2, cudaMemcpyDeviceToHost));
        float md = 0; for (size_t i = 0; i < h1.size(); ++i) md = std::max(md, std::fabs(__bfloat162float(h1[i]) - __bfloat162float(h2[i])));
        std::vector<float> t;
        for (int rep = 0; rep < 7; ++rep) {
          const int iters = std::max(layers, 64 / layers * layers);
          CK(cudaEventRecord(e0, st));
          for (int it = 0; it < iters; ++it) { a.k_cache = kc[it % layers]; a.v_cache = vc[it % layers]; v.fn(&a, st); }
          CK(cudaEventRecord(e1, st)); CK(cudaEventSynchronize(e1));
          float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); if (rep > 0) t.push_back(ms * 1000 / iters);
        }
        std::sort(t.begin(), t.end());
        const float us = t[t.size() / 2];
        printf("\n   %-20s %8.2f us  %6.2f TB/s  maxdiff %.2e", v.name, us, kv_bytes / (us * 1e-6) / 1e12, md);
      }
      printf("\n");
      fflush(stdout);
    }
    for (int l = 0; l < layers; ++l) { cudaFree(kc[l]); cudaFree(vc[l]); }
    cudaFree(q); cudaFree(out); cudaFree(ref); cudaFree(pacc); cudaFree(pml); cudaFree(ks); cudaFree(d_table); cudaFree(d_lens); cudaFree(d_chunks);
  }
  return 0;
}
