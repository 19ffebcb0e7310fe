// The engine's per-step host <-> device transfers, made so the host never waits for the device
// unless it needs a result. A plain `tensor.to(cuda)` from pageable memory synchronizes the
// stream: the host would stall behind the whole forward queued before it, which is what async
// scheduling (rollout/scheduler.h) exists to avoid.
//   - upload(): host values -> a new device tensor, staged in pinned memory and copied
//     asynchronously on the current stream (ATen's caching host allocator keeps the staging
//     buffer alive until that copy ran);
//   - Readback: device tensors -> pinned host memory, asynchronously, behind one event; wait()
//     blocks until the copies are done.
// On the CPU both are plain copies.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace fp8rl::rollout {

// A new 1-D `dtype` tensor on `device` holding `values` (converted).
at::Tensor upload(std::span<const int64_t> values, at::ScalarType dtype, at::Device device);
at::Tensor upload(std::span<const int32_t> values, at::ScalarType dtype, at::Device device);
at::Tensor upload(std::span<const float> values, at::ScalarType dtype, at::Device device);
at::Tensor upload(std::span<const uint8_t> values, at::ScalarType dtype, at::Device device);

class Readback {
 public:
  Readback() = default;
  // Starts copying each tensor to the host on its device's current stream (all on one device).
  explicit Readback(const std::vector<at::Tensor>& device_tensors);
  // The host copies (contiguous, on the CPU), in order, once the device has written them.
  const std::vector<at::Tensor>& wait();

 private:
  struct Event;
  std::vector<at::Tensor> host_;
  std::shared_ptr<Event> done_;  // null on the CPU or once waited for
};

}  // namespace fp8rl::rollout
