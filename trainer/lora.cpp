#include "trainer/lora.h"

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <cmath>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::trainer {

namespace {

bool ends_with_module(const std::string& name, const std::string& suffix) {
  return name == suffix || (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                            name[name.size() - suffix.size() - 1] == '.');
}

uint64_t hash_name(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL ^ seed;  // FNV-1a, seeded
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

}  // namespace

bool is_lora_target(const std::string& name, const std::vector<std::string>& target_modules) {
  for (const std::string& t : target_modules) {
    if (t == "all-linear") return name.find(".layers.") != std::string::npos;
    if (ends_with_module(name, t)) return true;
  }
  return false;
}

LoraLinear::LoraLinear(std::unique_ptr<model::Linear> base, const model::ProjectionSpec& spec,
                       const recipe::LoraConfig& lora, uint64_t seed, at::Device device,
                       std::shared_ptr<const PolicyMode> mode)
    : base_(std::move(base)),
      out_features_(spec.out_features()),
      scaling_(lora.alpha / static_cast<double>(lora.rank)),
      dropout_(lora.dropout),
      mode_(std::move(mode)) {
  std::vector<size_t> targeted;
  for (size_t i = 0; i < spec.parts.size(); ++i)
    if (is_lora_target(spec.parts[i], lora.target_modules)) targeted.push_back(i);
  FP8RL_CHECK(!targeted.empty(), cat("LoraLinear: no part of ", spec.name, " is a target"));
  const int64_t r = lora.rank, packed_rank = r * static_cast<int64_t>(targeted.size());
  const at::TensorOptions fp32 = at::TensorOptions(at::kFloat).device(device);
  a_packed_ = at::empty({packed_rank, spec.in_features}, fp32);
  b_packed_ = at::zeros({out_features_, packed_rank}, fp32);
  const at::NoGradGuard no_grad;
  int64_t offset = 0;
  for (size_t i = 0, block = 0; i < spec.parts.size(); ++i) {
    const int64_t out = spec.part_out[i];
    if (block < targeted.size() && targeted[block] == i) {
      at::Generator gen = at::detail::createCPUGenerator(hash_name(spec.parts[i], seed));
      const double bound = 1.0 / std::sqrt(static_cast<double>(spec.in_features));
      at::Tensor a = a_packed_.narrow(0, block * r, r);  // [r, K]
      a.copy_(at::empty({r, spec.in_features}, at::kFloat).uniform_(-bound, bound, gen));
      at::Tensor b = b_packed_.narrow(0, offset, out).narrow(1, block * r, r);  // [out, r], row stride P r
      // detach(): leaves that share the packed storage (B starts at zero, as PEFT's does).
      adapters_.push_back({spec.parts[i], offset, out, a.detach().set_requires_grad(true),
                           b.detach().set_requires_grad(true)});
      ++block;
    }
    offset += out;
  }
}

at::Tensor LoraLinear::forward_packed(const at::Tensor& x, at::Tensor y) {
  const at::ScalarType dtype = y.scalar_type();
  if (dtype != at::kFloat) {  // BF16/FP16 copies, refreshed after any in-place update
    if (!a_infer_.defined() || a_infer_.scalar_type() != dtype) {
      a_infer_ = at::empty(a_packed_.sizes(), a_packed_.options().dtype(dtype));
      b_infer_ = at::empty(b_packed_.sizes(), b_packed_.options().dtype(dtype));
      a_seen_ = b_seen_ = -1;  // copy at once
    }
    if (a_seen_ != a_packed_._version()) {
      a_infer_.copy_(a_packed_);
      a_seen_ = a_packed_._version();
    }
    if (b_seen_ != b_packed_._version()) {
      b_infer_.copy_(b_packed_);
      b_seen_ = b_packed_._version();
    }
  }
  const at::Tensor& a = dtype == at::kFloat ? a_packed_ : a_infer_;  // an FP32 model reads the packed tensors
  const at::Tensor& b = dtype == at::kFloat ? b_packed_ : b_infer_;
  if (!y.is_contiguous()) y = y.contiguous();
  const at::Tensor h = at::matmul(x.scalar_type() == dtype ? x : x.to(dtype), a.t());  // [..., P r]
  y.view({-1, out_features_}).addmm_(h.reshape({-1, h.size(-1)}), b.t(), 1.0, scaling_);  // y += s h B^T
  return y;
}

at::Tensor LoraLinear::forward(const at::Tensor& x) {
  at::Tensor y = base_->forward(x);  // [..., N]
  if (mode_->reference) return y;
  if (c10::InferenceMode::is_enabled()) return forward_packed(x, std::move(y));
  at::Tensor xa = x.to(at::kFloat);
  if (dropout_ > 0 && at::GradMode::is_enabled()) xa = at::dropout(xa, dropout_, /*train=*/true);
  // [..., N] fp32: each adapter's rows, zeros for parts without one.
  std::vector<at::Tensor> pieces;
  int64_t filled = 0;
  auto zeros = [&](int64_t n) {
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = n;
    return at::zeros(shape, xa.options());
  };
  for (const Adapter& ad : adapters_) {
    if (ad.offset > filled) pieces.push_back(zeros(ad.offset - filled));
    pieces.push_back(at::matmul(at::matmul(xa, ad.a.t()), ad.b.t()));  // [..., r] -> [..., out]
    filled = ad.offset + ad.out;
  }
  if (filled < out_features_) pieces.push_back(zeros(out_features_ - filled));
  at::Tensor delta = pieces.size() == 1 ? pieces[0] : at::cat(pieces, -1);
  return y + (delta * scaling_).to(y.scalar_type());
}

void LoraLinear::visit(const std::string& module, const model::TensorVisitor& fn) const {
  base_->visit(module, fn);
  for (const Adapter& ad : adapters_) {
    fn({ad.part + ".lora_A.weight", ad.a, model::dense_role(ad.a)});
    fn({ad.part + ".lora_B.weight", ad.b, model::dense_role(ad.b)});
  }
}

model::LinearFactory lora_linear_factory(model::LinearFactory base, const recipe::LoraConfig& lora, uint64_t seed,
                                         std::shared_ptr<const PolicyMode> mode) {
  return [base = std::move(base), lora, seed, mode](const model::ProjectionSpec& spec,
                                              const model::WeightReader& reader) -> std::unique_ptr<model::Linear> {
    std::unique_ptr<model::Linear> linear = base(spec, reader);
    bool targeted = false;
    for (const std::string& part : spec.parts) targeted = targeted || is_lora_target(part, lora.target_modules);
    if (!targeted) return linear;
    return std::make_unique<LoraLinear>(std::move(linear), spec, lora, seed, reader.device(), mode);
  };
}

}  // namespace fp8rl::trainer
