#include "rollout/transfer.h"

#include "core/util/error.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace fp8rl::rollout {
namespace {

at::Tensor upload_as(void* data, int64_t n, at::ScalarType from, at::ScalarType dtype, at::Device device) {
  const at::Tensor src = at::from_blob(data, {n}, at::TensorOptions().dtype(from));
  if (!device.is_cuda()) return src.to(dtype, /*non_blocking=*/false, /*copy=*/true);
  at::Tensor staged = at::empty({n}, at::TensorOptions().dtype(dtype).pinned_memory(true));
  staged.copy_(src);
  return staged.to(device, /*non_blocking=*/true);
}

}  // namespace

at::Tensor upload(std::span<const int64_t> v, at::ScalarType dtype, at::Device device) {
  return upload_as(const_cast<int64_t*>(v.data()), static_cast<int64_t>(v.size()), at::kLong, dtype, device);
}
at::Tensor upload(std::span<const int32_t> v, at::ScalarType dtype, at::Device device) {
  return upload_as(const_cast<int32_t*>(v.data()), static_cast<int64_t>(v.size()), at::kInt, dtype, device);
}
at::Tensor upload(std::span<const float> v, at::ScalarType dtype, at::Device device) {
  return upload_as(const_cast<float*>(v.data()), static_cast<int64_t>(v.size()), at::kFloat, dtype, device);
}
at::Tensor upload(std::span<const uint8_t> v, at::ScalarType dtype, at::Device device) {
  return upload_as(const_cast<uint8_t*>(v.data()), static_cast<int64_t>(v.size()), at::kByte, dtype, device);
}

#ifdef FP8RL_WITH_CUDA
struct Readback::Event {
  at::cuda::CUDAEvent event;
};
#else
struct Readback::Event {};
#endif

Readback::Readback(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return;
#ifdef FP8RL_WITH_CUDA
  if (tensors[0].is_cuda()) {
    // ATen copies on the source device's current stream; the event goes on that stream too.
    const c10::cuda::CUDAGuard guard(tensors[0].device());
    for (const at::Tensor& t : tensors) {
      FP8RL_CHECK(t.device() == tensors[0].device(), "Readback: tensors on different devices");
      host_.push_back(at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true)));
      host_.back().copy_(t, /*non_blocking=*/true);
    }
    done_ = std::make_shared<Event>();
    done_->event.record();
    return;
  }
#endif
  for (const at::Tensor& t : tensors) host_.push_back(t.cpu().contiguous());
}

const std::vector<at::Tensor>& Readback::wait() {
#ifdef FP8RL_WITH_CUDA
  if (done_) {
    done_->event.synchronize();
    done_.reset();
  }
#endif
  return host_;
}

}  // namespace fp8rl::rollout
