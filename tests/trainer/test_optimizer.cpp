// AdamW against its formula written out by hand (torch.optim.AdamW's), the FP32 master of a
// BF16 tensor, gradient clipping and the learning-rate schedule.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "tests/catch.h"
#include "trainer/optimizer.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

// |a - b| <= tol * max(1, |b|): Catch2 2.x and 3.x spell Approx differently.
bool near(double a, double b, double tol = 1e-6) { return std::abs(a - b) <= tol * std::max(1.0, std::abs(b)); }

model::ModelTensor param(const std::string& name, at::Tensor t) {
  return {name, t.set_requires_grad(true), model::TensorRole::trainable};
}

}  // namespace

TEST_CASE("AdamW follows the decoupled-weight-decay update step by step", "[trainer][optimizer]") {
  const at::Tensor p = at::tensor({0.5, -1.0, 2.0}, at::kDouble).to(at::kFloat);
  AdamWOptions o;
  o.lr = 0.1;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  AdamW opt({param("w", p)}, o);
  std::vector<double> w{0.5, -1.0, 2.0}, m(3, 0), v(3, 0);
  const std::vector<std::vector<double>> grads{{0.1, -0.2, 0.3}, {-0.4, 0.5, 0.0}, {1.0, 1.0, -1.0}};
  for (size_t t = 0; t < grads.size(); ++t) {
    p.mutable_grad() = at::tensor(grads[t], at::kDouble).to(at::kFloat);
    opt.step(o.lr);
    for (size_t i = 0; i < 3; ++i) {
      const double g = grads[t][i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.99 * v[i] + 0.01 * g * g;
      const double mh = m[i] / (1 - std::pow(0.9, t + 1)), vh = v[i] / (1 - std::pow(0.99, t + 1));
      w[i] = w[i] * (1 - 0.1 * 0.1) - 0.1 * mh / (std::sqrt(vh) + 1e-8);
    }
    for (size_t i = 0; i < 3; ++i) CHECK(near(p[static_cast<int64_t>(i)].item<double>(), w[i], 1e-5));
    CHECK_FALSE(p.grad().defined());  // cleared by step()
  }
  CHECK(opt.steps() == 3);
}

TEST_CASE("AdamW keeps an FP32 master for a BF16 tensor, so small updates accumulate", "[trainer][optimizer]") {
  const at::Tensor p = at::full({4}, 1.0, at::kBFloat16);
  AdamWOptions o;
  o.lr = 1e-4;  // far below BF16's resolution at 1.0 (2^-7): without a master nothing would move
  o.weight_decay = 0;
  AdamW opt({param("b", p)}, o);
  for (int i = 0; i < 200; ++i) {
    p.mutable_grad() = at::full({4}, 1.0, at::kBFloat16);
    opt.step(o.lr);
  }
  const at::Tensor master = opt.state_tensors().at("b.master");
  CHECK(near(master[0].item<double>(), 1.0 - 200 * 1e-4, 1e-4));
  CHECK(std::abs(p[0].item<double>() - 0.98) <= 0.004);  // BF16 rounding of the master
}

TEST_CASE("clip_grad_norm returns the global norm and scales gradients above the limit", "[trainer][optimizer]") {
  const at::Tensor a = at::zeros({2}), b = at::zeros({1});
  AdamW opt({param("a", a), param("b", b)}, {});
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  CHECK(near(opt.clip_grad_norm(0), 5.0));  // 0: measure only
  CHECK(a.grad()[0].item<float>() == 3.0f);
  CHECK(near(opt.clip_grad_norm(1.0), 5.0));
  const double after = std::sqrt(std::pow(a.grad()[0].item<double>(), 2) + std::pow(b.grad()[0].item<double>(), 2));
  CHECK(near(after, 1.0, 1e-5));
}

TEST_CASE("the optimizer state round-trips through state_tensors and load_state", "[trainer][optimizer]") {
  const at::Tensor p = at::tensor({1.0f, 2.0f});
  AdamW opt({param("w", p)}, {});
  p.mutable_grad() = at::tensor({0.5f, -0.5f});
  opt.step(0.01);
  const at::Tensor q = p.detach().clone();
  AdamW other({param("w", q)}, {});
  other.load_state(opt.state_tensors(), "test");
  CHECK(other.steps() == 1);
  p.mutable_grad() = at::tensor({0.1f, 0.2f});
  q.mutable_grad() = at::tensor({0.1f, 0.2f});
  opt.step(0.01);
  other.step(0.01);
  CHECK(at::equal(p, q));
  std::map<std::string, at::Tensor> missing = opt.state_tensors();
  missing.erase("w.exp_avg");
  CHECK_THROWS(other.load_state(missing, "ckpt/optimizer.safetensors"));
}

TEST_CASE("the schedule: linear warm-up, then constant or cosine to zero", "[trainer][optimizer]") {
  CHECK(near(scheduled_lr(1.0, 0, 4, 10, "constant"), 0.25));
  CHECK(near(scheduled_lr(1.0, 3, 4, 10, "constant"), 1.0));
  CHECK(near(scheduled_lr(1.0, 9, 4, 10, "constant"), 1.0));
  CHECK(near(scheduled_lr(1.0, 4, 4, 10, "cosine"), 1.0));
  CHECK(near(scheduled_lr(1.0, 7, 4, 10, "cosine"), 0.5));
  CHECK(std::abs(scheduled_lr(1.0, 10, 4, 10, "cosine") - 0.0) <= 1e-12);
}
