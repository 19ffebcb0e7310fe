#include "core/model/attention.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/model/layers.h"
#include "core/util/env.h"
#include "core/util/error.h"
#include "core/util/log.h"

#ifdef FP8RL_WITH_HOPPER_PREFILL
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>

#include "core/model/cuda/hopper_prefill.h"
#endif

namespace fp8rl::model {

at::Tensor Attention::forward_rotating(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const QkRotation& rotation, const AttentionContext& ctx, int64_t layer) {
  const auto [qr, kr] = qk_norm_rope(q, k, rotation.q_weight, rotation.k_weight, rotation.eps, rotation.cos, rotation.sin);
  return forward(qr, kr, v, ctx, layer);
}

namespace {

double softmax_scale(const at::Tensor& q) { return 1.0 / std::sqrt(static_cast<double>(q.size(-1))); }

void check_packed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionContext& ctx,
                  const char* who) {
  FP8RL_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, cat(who, ": q, k, v must be [N, heads, head_dim]"));
  FP8RL_CHECK(k.sizes() == v.sizes() && q.size(2) == k.size(2), cat(who, ": k and v must match, head_dim equal to q's"));
  FP8RL_CHECK(q.size(1) % k.size(1) == 0, cat(who, ": query heads must be a multiple of KV heads"));
  FP8RL_CHECK(ctx.cu_seqlens_q_host.size() >= 1 && ctx.cu_seqlens_q_host.size() == ctx.cu_seqlens_k_host.size(),
              cat(who, ": context has no sequence boundaries"));
  FP8RL_CHECK(q.size(0) == ctx.num_tokens(), cat(who, ": ", q.size(0), " query tokens, context says ", ctx.num_tokens()));
  FP8RL_CHECK(k.size(0) == ctx.cu_seqlens_k_host.back(),
              cat(who, ": ", k.size(0), " key tokens, context says ", ctx.cu_seqlens_k_host.back()));
}

// [L, Hkv, D] -> [1, Hq, L, D], KV head j repeated for query heads j*g .. j*g+g-1 (HF's repeat_kv).
at::Tensor heads_first(const at::Tensor& x, int64_t repeat) {
  at::Tensor h = x.transpose(0, 1).unsqueeze(0);  // [1, H, L, D]
  return repeat == 1 ? h : at::repeat_interleave(h, repeat, 1);
}

}  // namespace

// What VarlenAttention keeps per forward call: the Hopper kernel's work plan over the call's
// sequence boundaries (the same for every layer) and the device workspace holding it.
struct AttentionScratch {
  at::Tensor hopper_workspace;  // [bytes] uint8 on the device
  int64_t num_q_heads = 0, num_kv_heads = 0;  // what the plan was made for (its work list names heads)
#ifdef FP8RL_WITH_HOPPER_PREFILL
  cuda::HopperPrefillPlan hopper_plan;
#endif
};

AttentionContext whole_sequences(std::span<const int64_t> lengths, at::Device device, Attention* attention) {
  AttentionContext ctx;
  ctx.attention = attention;
  ctx.cu_seqlens_q_host.reserve(lengths.size() + 1);
  ctx.cu_seqlens_q_host.push_back(0);
  for (const int64_t len : lengths) {
    FP8RL_CHECK(len >= 0, "whole_sequences: negative sequence length");
    ctx.cu_seqlens_q_host.push_back(ctx.cu_seqlens_q_host.back() + len);
    ctx.max_seqlen_q = std::max(ctx.max_seqlen_q, len);
  }
  FP8RL_CHECK(ctx.cu_seqlens_q_host.back() < (int64_t{1} << 31), "whole_sequences: more than 2^31 tokens in one call");
  ctx.cu_seqlens_k_host = ctx.cu_seqlens_q_host;
  ctx.max_seqlen_k = ctx.max_seqlen_q;
  ctx.cu_seqlens_q = at::tensor(ctx.cu_seqlens_q_host, at::TensorOptions().dtype(at::kLong)).to(at::kInt).to(device);
  ctx.cu_seqlens_k = ctx.cu_seqlens_q;
  return ctx;
}

bool VarlenAttention::uses_flash(const at::Tensor& q) {
  const auto dt = q.scalar_type();
  return q.is_cuda() && (dt == at::kBFloat16 || dt == at::kHalf) && q.size(-1) % 8 == 0 && q.size(-1) <= 256;
}

bool VarlenAttention::hopper_kernel_built() {
#ifdef FP8RL_WITH_HOPPER_PREFILL
  return true;
#else
  return false;
#endif
}

bool VarlenAttention::uses_hopper(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const {
#ifdef FP8RL_WITH_HOPPER_PREFILL
  static const bool enabled = env_switch("FP8RL_HOPPER_PREFILL", true);
  const bool needs_grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  // Not while a CUDA graph is captured: the plan's host-to-device copy cannot be.
  return enabled && inference_kernel_ && !needs_grad && q.is_cuda() && q.scalar_type() == at::kBFloat16 &&
         k.scalar_type() == at::kBFloat16 && v.scalar_type() == at::kBFloat16 &&
         cuda::hopper_prefill_supports(q.device().index(), q.size(-1)) &&
         c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
#else
  (void)q;
  (void)k;
  (void)v;
  return false;
#endif
}

at::Tensor VarlenAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const AttentionContext& ctx, int64_t /*layer*/) {
  check_packed(q, k, v, ctx, "VarlenAttention");
  if (!uses_flash(q) || q.size(0) == 0) return reference_varlen_attention(q, k, v, ctx);
#ifdef FP8RL_WITH_HOPPER_PREFILL
  // The kernel takes row and head strides, so the views the engine passes (v is a slice of the
  // fused q/k/v projection's rows) go in as they are: copying v cost ~25 us a layer at 8K tokens.
  // Its TMA loads need 16-byte aligned bases and strides; anything else is copied first, and a
  // copy that still starts off 16 bytes (a view's storage offset) goes to flash-attention 2 below.
  auto tma_view = [](const at::Tensor& x) {
    const bool ok = x.stride(2) == 1 && x.stride(0) % 8 == 0 && x.stride(1) % 8 == 0 &&
                    reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
    return ok ? x : x.contiguous();
  };
  auto aligned = [](const at::Tensor& x) { return reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0; };
  const at::Tensor qc = uses_hopper(q, k, v) ? tma_view(q) : at::Tensor();
  const at::Tensor kc = qc.defined() ? tma_view(k) : at::Tensor(), vc = qc.defined() ? tma_view(v) : at::Tensor();
  if (qc.defined() && aligned(qc) && aligned(kc) && aligned(vc)) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream(q.device().index()).stream();
    if (!ctx.scratch) {  // first layer of this call: plan the work once for all layers
      auto scratch = std::make_shared<AttentionScratch>();
      const size_t bytes = cuda::hopper_prefill_workspace_bytes(ctx.num_sequences(), q.size(0), q.size(1));
      scratch->hopper_workspace =
          at::empty({static_cast<int64_t>(bytes)}, q.options().dtype(at::kByte));
      scratch->num_q_heads = q.size(1);
      scratch->num_kv_heads = k.size(1);
      scratch->hopper_plan = cuda::hopper_prefill_plan(
          ctx.cu_seqlens_q_host.data(), ctx.cu_seqlens_k_host.data(), ctx.num_sequences(), q.size(1), k.size(1),
          q.size(2), scratch->hopper_workspace.data_ptr(), bytes, stream);
      ctx.scratch = std::move(scratch);
    }
    FP8RL_CHECK(ctx.scratch->num_q_heads == q.size(1) && ctx.scratch->num_kv_heads == k.size(1) &&
                    ctx.scratch->hopper_workspace.device() == q.device(),
                "VarlenAttention: one context's layers differ in heads or device; its work plan fits only the first");
    at::Tensor out = at::empty({qc.size(0), qc.size(1), qc.size(2)}, qc.options());  // [N, Hq, D], contiguous
    cuda::HopperPrefillArgs a{};
    a.q = qc.data_ptr();
    a.k = kc.data_ptr();
    a.v = vc.data_ptr();
    a.out = out.data_ptr();
    a.q_stride_n = qc.stride(0);
    a.q_stride_h = qc.stride(1);
    a.k_stride_n = kc.stride(0);
    a.k_stride_h = kc.stride(1);
    a.v_stride_n = vc.stride(0);
    a.v_stride_h = vc.stride(1);
    a.o_stride_n = out.stride(0);
    a.o_stride_h = out.stride(1);
    a.num_q_tokens = qc.size(0);
    a.num_kv_tokens = kc.size(0);
    a.num_q_heads = qc.size(1);
    a.num_kv_heads = kc.size(1);
    a.head_dim = qc.size(2);
    a.scale = static_cast<float>(softmax_scale(q));
    a.workspace = ctx.scratch->hopper_workspace.data_ptr();
    a.plan = ctx.scratch->hopper_plan;
    cuda::hopper_prefill(a, stream);
    return out;
  }
#endif
  // Flash-attention 2 (ATen's build): varlen causal, GQA natively, bottom-right alignment when a
  // sequence has more keys than queries. Differentiable (ATen's FlashAttentionBackward).
  auto out = at::_flash_attention_forward(q.contiguous(), k.contiguous(), v.contiguous(), ctx.cu_seqlens_q,
                                          ctx.cu_seqlens_k, ctx.max_seqlen_q, ctx.max_seqlen_k, /*dropout_p=*/0.0,
                                          /*is_causal=*/true, /*return_debug_mask=*/false, softmax_scale(q));
  return std::get<0>(out);  // [N, Hq, D]
}

at::Tensor reference_varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const AttentionContext& ctx) {
  check_packed(q, k, v, ctx, "reference_varlen_attention");
  const int64_t repeat = q.size(1) / k.size(1);
  const double scale = softmax_scale(q);
  std::vector<at::Tensor> outs;
  for (int64_t s = 0; s < ctx.num_sequences(); ++s) {
    const int64_t q0 = ctx.cu_seqlens_q_host[s], lq = ctx.cu_seqlens_q_host[s + 1] - q0;
    const int64_t k0 = ctx.cu_seqlens_k_host[s], lk = ctx.cu_seqlens_k_host[s + 1] - k0;
    if (lq == 0) continue;
    FP8RL_CHECK(lk >= lq, "reference_varlen_attention: a sequence has fewer keys than queries");
    const at::Tensor qs = q.narrow(0, q0, lq).transpose(0, 1).unsqueeze(0);  // [1, Hq, lq, D]
    const at::Tensor ks = heads_first(k.narrow(0, k0, lk), repeat);          // [1, Hq, lk, D]
    const at::Tensor vs = heads_first(v.narrow(0, k0, lk), repeat);
    at::Tensor o;
    if (lq == lk) {
      o = at::scaled_dot_product_attention(qs, ks, vs, {}, 0.0, /*is_causal=*/true, scale);
    } else {
      // Query i is token lk - lq + i of the sequence: it sees keys 0 .. lk - lq + i.
      const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
      const at::Tensor mask = at::arange(lk, opts).unsqueeze(0) <= (at::arange(lq, opts) + (lk - lq)).unsqueeze(1);
      o = at::scaled_dot_product_attention(qs, ks, vs, mask, 0.0, /*is_causal=*/false, scale);
    }
    outs.push_back(o.squeeze(0).transpose(0, 1));  // [lq, Hq, D]
  }
  if (outs.empty()) return at::empty_like(q);
  return outs.size() == 1 ? outs[0].contiguous() : at::cat(outs, 0);
}

at::Tensor PaddedMaskAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const AttentionContext& ctx, int64_t /*layer*/) {
  check_packed(q, k, v, ctx, "PaddedMaskAttention");
  FP8RL_CHECK(ctx.cu_seqlens_q_host == ctx.cu_seqlens_k_host, "PaddedMaskAttention: keys must be the queries");
  const int64_t S = ctx.num_sequences(), T = ctx.max_seqlen_q, N = q.size(0);
  const int64_t hq = q.size(1), hkv = k.size(1), D = q.size(2);
  if (N == 0) return at::empty_like(q);
  // Row s * T + t of the padded layout holds token t of sequence s.
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(N));
  for (int64_t s = 0; s < S; ++s)
    for (int64_t t = 0; t < ctx.cu_seqlens_q_host[s + 1] - ctx.cu_seqlens_q_host[s]; ++t) rows.push_back(s * T + t);
  const at::Tensor idx = at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(q.device());
  auto pad = [&](const at::Tensor& x) {  // [N, H, D] -> [S, H, T, D]
    return at::zeros({S * T, x.size(1), D}, x.options()).index_copy(0, idx, x).view({S, T, x.size(1), D}).transpose(1, 2);
  };
  at::Tensor kp = pad(k), vp = pad(v);
  if (hq != hkv) {
    kp = at::repeat_interleave(kp, hq / hkv, 1);
    vp = at::repeat_interleave(vp, hq / hkv, 1);
  }
  const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(q.device());
  at::Tensor valid = at::zeros({S * T}, bool_opts).index_fill(0, idx, true).view({S, 1, T});  // [S, 1, T] real keys
  const at::Tensor causal = at::ones({T, T}, bool_opts).tril();
  // A pad query sees only itself: a row with no allowed key would make softmax NaN, and NaN in a
  // pad row would still poison gradients. Pad rows are dropped below.
  const at::Tensor mask = ((causal.unsqueeze(0) & valid) | at::eye(T, bool_opts).unsqueeze(0)).unsqueeze(1);
  const at::Tensor o = at::scaled_dot_product_attention(pad(q), kp, vp, mask, 0.0, false, softmax_scale(q));
  return o.transpose(1, 2).reshape({S * T, hq, D}).index_select(0, idx);  // [N, Hq, D]
}

}  // namespace fp8rl::model
