#include "trainer/collective_nccl.h"

#include "core/util/error.h"

#ifdef FP8RL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace fp8rl::trainer {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                                    std::chrono::milliseconds timeout) {
#ifdef FP8RL_WITH_NCCL
  auto o = c10d::ProcessGroupNCCL::Options::create();
  o->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
#else
  (void)store, (void)rank, (void)world, (void)timeout;
  throw ConfigError("data-parallel training on GPUs needs NCCL, and this build of fp8rl has none (build with CUDA)");
#endif
}

}  // namespace fp8rl::trainer
