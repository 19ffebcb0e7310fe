// rollout/transfer.h on CUDA: uploads and readbacks queued behind device work see and return the
// right values (the copies are stream-ordered; the host never reads a value before wait()).
#include <ATen/cuda/CUDAContext.h>

#include <cstdint>
#include <vector>

#include "rollout/transfer.h"
#include "tests/catch.h"

using namespace fp8rl::rollout;

TEST_CASE("transfer on CUDA: uploads and readbacks behind queued work carry the right values", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  const at::Device dev(at::kCUDA, 0);
  const at::Tensor a = at::randn({2048, 2048}, at::TensorOptions().device(dev));
  for (int round = 0; round < 20; ++round) {
    at::Tensor busy = a;
    for (int i = 0; i < 4; ++i) busy = at::mm(busy, a) * 1e-3;  // device work queued ahead of the copies
    std::vector<int64_t> v(100);
    for (size_t i = 0; i < v.size(); ++i) v[i] = round * 1000 + static_cast<int64_t>(i);
    const at::Tensor d = upload(std::span<const int64_t>(v), at::kLong, dev);
    v.assign(v.size(), -7);  // rewritten at once: the staged copy must not see it
    REQUIRE(d.is_cuda());
    Readback rb(d + busy.sum().gt(1e30).to(at::kLong));  // depends on the queued work; adds 0
    const at::Tensor& host = rb.wait();
    REQUIRE(host.device().is_cpu());
    for (int64_t i = 0; i < 100; ++i) REQUIRE(host[i].item<int64_t>() == round * 1000 + i);
  }
}
