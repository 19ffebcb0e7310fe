// rollout/transfer.h on CUDA: uploads and readbacks queued behind device work, several in
// flight at once (staging buffers must not be reused under a pending copy), carry the right
// values, and the host reads none of them before wait().
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
  std::vector<Readback> pending;
  for (int round = 0; round < 16; ++round) {
    at::Tensor busy = a;
    for (int i = 0; i < 4; ++i) busy = at::mm(busy, a) * 1e-3;  // device work queued ahead of the copies
    std::vector<int64_t> v(100);
    for (size_t i = 0; i < v.size(); ++i) v[i] = round * 1000 + static_cast<int64_t>(i);
    const at::Tensor d = upload(std::span<const int64_t>(v), at::kLong, dev);
    v.assign(v.size(), -7);  // rewritten at once: the staged copy must not see it
    REQUIRE(d.is_cuda());
    // Depends on the queued work (adds 0), so its copy runs after it.
    const at::Tensor late = d + busy.sum().gt(1e30).to(at::kLong);
    pending.emplace_back(std::vector<at::Tensor>{late, late.to(at::kFloat) * 0.5});
  }
  // Sixteen readbacks in flight; read them in order.
  for (int round = 0; round < 16; ++round) {
    const std::vector<at::Tensor>& host = pending[static_cast<size_t>(round)].wait();
    REQUIRE(host.size() == 2);
    REQUIRE(host[0].device().is_cpu());
    for (int64_t i = 0; i < 100; ++i) {
      REQUIRE(host[0][i].item<int64_t>() == round * 1000 + i);
      REQUIRE(host[1][i].item<float>() == 0.5f * static_cast<float>(round * 1000 + i));
    }
  }
}
