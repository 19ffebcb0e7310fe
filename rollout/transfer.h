// The engine's per-step host <-> device transfers, made so the host never waits for the device
// unless it needs a result. A plain `tensor.to(cuda)` from pageable memory synchronizes the
// stream: the host would stall behind the whole forward queued before it, which is what async
// scheduling (rollout/scheduler.h) exists to avoid.
//   - upload(): host values -> a new device tensor, staged in pinned memory and copied
//     asynchronously on the current stream (ATen's caching host allocator keeps the staging
//     buffer alive until that copy ran);
//   - Readback: a device tensor -> pinned host memory, asynchronously, with an event; wait()
//     blocks until the copy is done.
// On the CPU both are plain copies.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <span>

namespace fp8rl::rollout {

// A new 1-D `dtype` tensor on `device` holding `values` (converted).
at::Tensor upload(std::span<const int64_t> values, at::ScalarType dtype, at::Device device);
at::Tensor upload(std::span<const int32_t> values, at::ScalarType dtype, at::Device device);
at::Tensor upload(std::span<const float> values, at::ScalarType dtype, at::Device device);
at::Tensor upload(std::span<const uint8_t> values, at::ScalarType dtype, at::Device device);

class Readback {
 public:
  Readback() = default;
  // Starts copying `device_tensor` to the host on the current stream.
  explicit Readback(const at::Tensor& device_tensor);
  // The host copy (contiguous, on the CPU), once the device has written it.
  const at::Tensor& wait();

 private:
  struct Event;
  at::Tensor host_;
  std::shared_ptr<Event> done_;  // null on the CPU or once waited for
};

}  // namespace fp8rl::rollout
