// FlashInfer's sm90 ragged prefill, instantiated for what the decoders here use (bfloat16,
// head_dim 128, causal); see hopper_prefill.h. FlashInfer is header-only: its Python package
// generates the parameter struct and instantiations at run time (JIT), here they are written
// once, so the only FlashInfer code in the binary is its kernel templates and host scheduler.
#include "core/model/cuda/hopper_prefill.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include <cutlass/numeric_types.h>
#include <flashinfer/attention/hopper/default_params.cuh>
#include <flashinfer/attention/hopper/prefill_sm90.cuh>
#include <flashinfer/attention/hopper/variants.cuh>
#include <flashinfer/attention/scheduler.cuh>

namespace fp8rl::cuda {
namespace {

namespace fi = flashinfer;
using BF16 = cutlass::bfloat16_t;
using Params = fi::BatchPrefillRaggedParams<BF16, BF16, BF16, int32_t>;
constexpr int kHeadDim = 128;
constexpr int kTileQ = 128;  // PrefillSM90Plan's query tile for head_dim 128

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

int sm_count(int device) {
  int n = 0;
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "hopper_prefill: SM count");
  return n;
}

}  // namespace

bool hopper_prefill_supports(int device, int64_t head_dim) {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  return major == 9 && head_dim == kHeadDim;
}

size_t hopper_prefill_workspace_bytes(int64_t num_sequences, int64_t num_q_tokens, int64_t num_q_heads) {
  // PrefillSM90Plan's own bound: per head at most ceil(N / tile) + S - 1 work tiles (all heads
  // share one schedule above 4096 of them); eight int32 arrays of that length plus the per-CTA
  // index, each 16-byte aligned.
  int device = 0;
  check(cudaGetDevice(&device), "hopper_prefill: device");
  const int64_t per_head = (num_q_tokens + kTileQ - 1) / kTileQ + std::max<int64_t>(num_sequences, 1) - 1;
  const int64_t works = per_head > 4096 ? per_head : per_head * num_q_heads;
  return 8 * (static_cast<size_t>(works) * sizeof(int32_t) + 16) + (sm_count(device) + 1) * sizeof(int32_t) + 16;
}

HopperPrefillPlan hopper_prefill_plan(const int64_t* cu_q, const int64_t* cu_k, int64_t num_sequences,
                                      int64_t num_q_heads, int64_t num_kv_heads, int64_t head_dim, void* workspace,
                                      size_t workspace_bytes, cudaStream_t stream) {
  std::vector<int32_t> qo_indptr(num_sequences + 1), kv_indptr(num_sequences + 1), kv_len(num_sequences);
  for (int64_t s = 0; s <= num_sequences; ++s) {
    qo_indptr[s] = static_cast<int32_t>(cu_q[s]);
    kv_indptr[s] = static_cast<int32_t>(cu_k[s]);
    if (s < num_sequences) kv_len[s] = static_cast<int32_t>(cu_k[s + 1] - cu_k[s]);
  }
  // The plan writes its arrays into this host image, then copies it to the device workspace.
  // Pageable memory: cudaMemcpyAsync has staged it when it returns, so the vector may go.
  std::vector<uint8_t> host(workspace_bytes);
  fi::PrefillPlanSM90Info info;
  check(fi::PrefillSM90Plan<int32_t>(nullptr, 0, workspace, host.data(), workspace_bytes, info, qo_indptr.data(),
                                     kv_indptr.data(), kv_len.data(), static_cast<uint32_t>(cu_q[num_sequences]),
                                     static_cast<uint32_t>(num_sequences), static_cast<uint32_t>(num_q_heads),
                                     static_cast<uint32_t>(num_kv_heads), static_cast<uint32_t>(head_dim),
                                     static_cast<uint32_t>(head_dim), /*page_size=*/1, /*causal=*/true,
                                     /*enable_cuda_graph=*/false, /*sizeof_dtype_o=*/2, stream),
        "hopper_prefill: plan");
  HopperPrefillPlan plan;
  const std::vector<int64_t> v = info.ToVector();
  std::copy(v.begin(), v.end(), plan.info.begin());
  return plan;
}

void hopper_prefill(const HopperPrefillArgs& a, cudaStream_t stream) {
  if (a.head_dim != kHeadDim) throw std::runtime_error("hopper_prefill: head_dim " + std::to_string(a.head_dim) + " is not compiled in");
  fi::PrefillPlanSM90Info info;
  info.FromVector(std::vector<int64_t>(a.plan.info.begin(), a.plan.info.end()));
  auto* ints = const_cast<void*>(a.workspace);

  Params p{};
  p.q_ptr = static_cast<BF16*>(const_cast<void*>(a.q));
  p.k_ptr = static_cast<BF16*>(const_cast<void*>(a.k));
  p.v_ptr = static_cast<BF16*>(const_cast<void*>(a.v));
  p.o_ptr = static_cast<BF16*>(a.out);
  p.lse_ptr = nullptr;  // the engine needs no log-sum-exp
  p.qo_tile_indices = fi::GetPtrFromBaseOffset<int32_t>(ints, info.qo_tile_indices_offset);
  p.qo_indptr = fi::GetPtrFromBaseOffset<int32_t>(ints, info.qo_indptr_offset);
  p.kv_indptr = fi::GetPtrFromBaseOffset<int32_t>(ints, info.kv_indptr_offset);
  p.qo_lens = fi::GetPtrFromBaseOffset<int32_t>(ints, info.qo_len_offset);
  p.kv_lens = fi::GetPtrFromBaseOffset<int32_t>(ints, info.kv_len_offset);
  p.head_indices = fi::GetPtrFromBaseOffset<int32_t>(ints, info.head_indices_offset);
  p.work_indptr = fi::GetPtrFromBaseOffset<int32_t>(ints, info.work_indptr_offset);
  p.batch_indices = fi::GetPtrFromBaseOffset<int32_t>(ints, info.batch_indices_offset);
  p.additional_params.logits_soft_cap = 0.f;
  p.additional_params.sm_scale = a.scale;
  p.q_stride_n = a.q_stride_n;
  p.q_stride_h = a.q_stride_h;
  p.k_stride_n = a.k_stride_n;
  p.k_stride_h = a.k_stride_h;
  p.v_stride_n = a.v_stride_n;
  p.v_stride_h = a.v_stride_h;
  p.o_stride_n = a.o_stride_n;
  p.o_stride_h = a.o_stride_h;
  p.nnz_qo = a.num_q_tokens;
  p.nnz_kv = a.num_kv_tokens;
  p.num_qo_heads = static_cast<int>(a.num_q_heads);
  p.num_kv_heads = static_cast<int>(a.num_kv_heads);
  p.group_size = static_cast<int>(a.num_q_heads / a.num_kv_heads);
  p.window_left = -1;
  p.causal = true;

  cudaError_t e;
  if (info.same_schedule_for_all_heads) {
    e = fi::BatchPrefillWithRaggedKVCacheDispatched<kHeadDim, kHeadDim, fi::MaskMode::kCausal, false, true,
                                                    fi::StandardAttention>(p, /*enable_pdl=*/false, stream);
  } else {
    e = fi::BatchPrefillWithRaggedKVCacheDispatched<kHeadDim, kHeadDim, fi::MaskMode::kCausal, false, false,
                                                    fi::StandardAttention>(p, /*enable_pdl=*/false, stream);
  }
  check(e, "hopper_prefill: kernel launch");
}

}  // namespace fp8rl::cuda
