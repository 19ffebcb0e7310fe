// rollout/transfer.h on the CPU: upload converts and owns its values, Readback hands back the
// tensor's values (plain copies here; the CUDA path is in gpu_test_transfer.cpp).
#include <cstdint>
#include <vector>

#include "rollout/transfer.h"
#include "tests/catch.h"

using namespace fp8rl::rollout;

TEST_CASE("transfer: upload converts to the asked dtype and owns its copy, Readback returns the values",
          "[rollout][transfer]") {
  std::vector<int64_t> longs{3, -1, 1LL << 40};
  const at::Tensor as_long = upload(std::span<const int64_t>(longs), at::kLong, at::kCPU);
  longs[0] = 99;  // the tensor must not alias the vector
  CHECK(as_long.dtype() == at::kLong);
  CHECK(as_long[0].item<int64_t>() == 3);
  CHECK(as_long[2].item<int64_t>() == (1LL << 40));
  const std::vector<int32_t> ints{7, 8};
  const at::Tensor as_long2 = upload(std::span<const int32_t>(ints), at::kLong, at::kCPU);
  CHECK(as_long2.dtype() == at::kLong);
  CHECK(as_long2[1].item<int64_t>() == 8);
  const std::vector<uint8_t> bytes{0, 1, 255};
  CHECK(upload(std::span<const uint8_t>(bytes), at::kByte, at::kCPU)[2].item<uint8_t>() == 255);
  const std::vector<float> floats{0.5f, -2.0f};
  const at::Tensor f = upload(std::span<const float>(floats), at::kFloat, at::kCPU);
  CHECK(f[1].item<float>() == -2.0f);
  CHECK(upload(std::span<const int64_t>(), at::kLong, at::kCPU).numel() == 0);

  Readback rb({f * 2, as_long});
  const std::vector<at::Tensor>& host = rb.wait();
  REQUIRE(host.size() == 2);
  CHECK(host[0].is_contiguous());
  CHECK(host[0][0].item<float>() == 1.0f);
  CHECK(host[1][2].item<int64_t>() == (1LL << 40));
  CHECK(rb.wait()[0].data_ptr() == host[0].data_ptr());  // waiting twice is harmless
  CHECK(Readback().wait().empty());
}
