// One build of paged_decode.cu in its own namespace (-Dfp8rl=NS), exported as PD_ENTRY (the
// kernel) and PD_SPLITS (its split count for a batch shape).
#include "rollout/cuda/paged_decode.cu"
// The engine's launches ask for programmatic dependent launch unless FP8RL_PDL=0 (core/util/pdl.cpp,
// not linked here: it reads the switch through the library's env parser).
#include <cstdio>
#include <cstdlib>
#include <cstring>
namespace fp8rl {
bool pdl_enabled() {  // unset or 1: on; 0: off; anything else refused, as the library does
  static const bool on = [] {
    const char* v = std::getenv("FP8RL_PDL");
    if (v == nullptr || std::strcmp(v, "1") == 0) return true;
    if (std::strcmp(v, "0") == 0) return false;
    std::fprintf(stderr, "FP8RL_PDL: expected 0 or 1, got '%s'\n", v);
    std::exit(2);
  }();
  return on;
}
}  // namespace fp8rl
extern "C" void PD_ENTRY(const void* a, cudaStream_t s) {
  fp8rl::cuda::paged_decode_attention(*static_cast<const fp8rl::cuda::PagedDecodeArgs*>(a), s);
}
#ifdef PD_SPLITS  // this tree's build only: an older one may have another signature
extern "C" int64_t PD_SPLITS(int64_t batch, int64_t num_kv_heads, int sm_count, bool fp8_kv) {
  return fp8rl::cuda::paged_decode_splits(batch, num_kv_heads, sm_count, fp8_kv);  // the engine's default rule
}
#endif
