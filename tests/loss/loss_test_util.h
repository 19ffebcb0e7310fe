// Helpers for the loss tests: tensor <-> std::vector<double>, closeness with atol + rtol*|ref|,
// and central finite-difference gradients in double.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "tests/catch.h"

namespace fp8rl::test {

inline std::vector<double> to_vec(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous().reshape({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

inline at::Tensor from_vec(const std::vector<double>& v, at::IntArrayRef shape) {
  return at::tensor(v, at::kDouble).reshape(shape).clone();
}

// Every element: |got - ref| <= atol + rtol * |ref|. Reports the first few failures.
inline void check_close(const std::vector<double>& got, const std::vector<double>& ref, double atol, double rtol,
                        const std::string& what) {
  REQUIRE(got.size() == ref.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::fabs(got[i] - ref[i]) <= atol + rtol * std::fabs(ref[i]);
    if (!ok && bad++ < 5) {
      INFO(what << "[" << i << "]: got " << got[i] << " ref " << ref[i]);
      CHECK(ok);
    }
  }
  INFO(what << ": " << bad << " of " << got.size() << " elements out of tolerance");
  CHECK(bad == 0);
}

inline void check_close(const at::Tensor& got, const at::Tensor& ref, double atol, double rtol,
                        const std::string& what) {
  REQUIRE(got.sizes() == ref.sizes());
  check_close(to_vec(got), to_vec(ref), atol, rtol, what);
}

// d f / d x by central differences; f maps a double tensor shaped like x to a 0-dim tensor.
inline at::Tensor numeric_grad(const std::function<at::Tensor(const at::Tensor&)>& f, const at::Tensor& x,
                               double h = 1e-6) {
  c10::NoGradGuard no_grad;  // FD evaluations need no graph
  at::Tensor xc = x.detach().clone();
  at::Tensor g = at::zeros_like(xc);
  double* px = xc.data_ptr<double>();
  double* pg = g.data_ptr<double>();
  for (int64_t i = 0; i < xc.numel(); ++i) {
    const double x0 = px[i];
    px[i] = x0 + h;
    const double fp = f(xc).item<double>();
    px[i] = x0 - h;
    const double fm = f(xc).item<double>();
    px[i] = x0;
    pg[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// Autograd gradient of f at x against central differences. In double with h = 1e-6 the
// truncation error is ~h^2 * f''' ~ 1e-12 and the rounding error ~1e-16 * |f| / h ~ 1e-10, so
// atol 1e-6 + rtol 1e-5 only fails on a real gradient bug (or a kink within h of x: tests keep
// inputs away from clip boundaries).
inline void check_grad(const std::function<at::Tensor(const at::Tensor&)>& f, const at::Tensor& x,
                       const std::string& what, double atol = 1e-6, double rtol = 1e-5) {
  at::Tensor xv = x.detach().clone().requires_grad_(true);
  f(xv).backward();
  REQUIRE(xv.grad().defined());
  check_close(xv.grad(), numeric_grad(f, x), atol, rtol, what + " grad");
}

}  // namespace fp8rl::test
