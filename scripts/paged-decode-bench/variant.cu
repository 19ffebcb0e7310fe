// One build of paged_decode.cu in its own namespace (-Dfp8rl=NS), exported as PD_ENTRY.
#include "rollout/cuda/paged_decode.cu"
extern "C" void PD_ENTRY(const void* a, cudaStream_t s) {
  fp8rl::cuda::paged_decode_attention(*static_cast<const fp8rl::cuda::PagedDecodeArgs*>(a), s);
}
