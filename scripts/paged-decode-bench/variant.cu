// One build of paged_decode.cu in its own namespace (-Dfp8rl=NS), exported as PD_ENTRY (the
// kernel) and PD_SPLITS (its split count for a batch shape).
#include "rollout/cuda/paged_decode.cu"
extern "C" void PD_ENTRY(const void* a, cudaStream_t s) {
  fp8rl::cuda::paged_decode_attention(*static_cast<const fp8rl::cuda::PagedDecodeArgs*>(a), s);
}
extern "C" int64_t PD_SPLITS(int64_t batch, int64_t num_kv_heads, int sm_count) {
  return fp8rl::cuda::paged_decode_splits(batch, num_kv_heads, sm_count);
}
