// LoRA under kept decode graphs (rollout.keep_decode_graphs) on CUDA: the engine's graphs are
// captured in the first rollout and replayed in later ones, while the optimizer updates the
// adapters in place between them. A replay must read the updated adapters, through the BF16
// copies the engine's first (eager) forward of each rollout refreshes (trainer/lora.h), never the
// copies of the rollout they were captured in.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/cuda/CUDAContext.h>

#include <cmath>
#include <string>
#include <vector>

#include "rollout/engine.h"
#include "tests/catch.h"
#include "tests/rollout/engine_test_util.h"
#include "tests/trainer/trainer_test_util.h"
#include "trainer/policy.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

// Every adapter's A and B redrawn in place, as an optimizer step changes them (B starts at zero,
// where adapters add nothing: the first draw makes them matter).
void redraw_adapters(const Policy& policy, uint64_t seed) {
  const at::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (const model::ModelTensor& t : policy.trainable()) {
    const at::Tensor draw = at::empty(t.tensor.sizes(), at::TensorOptions().dtype(at::kFloat)).normal_(0, 0.2, gen);
    t.tensor.detach().copy_(draw);
  }
}

// Engine log-probs against the policy's own recompute, both in rollout mode (the FP8 GEMMs).
test::LogprobGap gap(Policy& policy, const std::vector<rollout::GenerateRequest>& reqs,
                     const std::vector<rollout::GenerateOutput>& out) {
  const Policy::RolloutScope rollout_mode(policy);
  const at::NoGradGuard no_grad;
  return test::logprob_gap(policy.model(), reqs, out);
}

}  // namespace

TEST_CASE("kept decode graphs replay LoRA adapters updated in place between rollouts", "[trainer][lora][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  test::TempDir dir;
  const std::string model_dir = test::tiny_model_dir(dir, 3);
  for (const char* quant : {"none", "fp8"}) {
    INFO("quantization " << quant);
    Policy policy(test::quickstart(dir, {std::string("quantization.quant_method=") + quant, "model.dtype=bfloat16", "lora.rank=4"})
                      .recipe,
                  model_dir, at::Device(at::kCUDA, 0));
    REQUIRE(policy.lora());
    redraw_adapters(policy, 5);
    std::vector<rollout::GenerateRequest> reqs;
    for (int i = 0; i < 4; ++i) {
      rollout::GenerateRequest g;
      g.prompt = test::random_prompt(5 + 13 * i, policy.model().config().shape.vocab_size, 40 + i);
      g.params.n = 1 + i % 2;
      g.params.max_new_tokens = 24;
      g.sampling = {i % 2 == 0 ? 0.0 : 1.0, 0, 1.0, 17};
      reqs.push_back(g);
    }
    rollout::EngineConfig c;
    c.gpu_memory_utilization = 0.5;
    c.keep_decode_graphs = true;
    rollout::Engine engine(policy.model(), c);
    auto generate = [&] {
      const Policy::RolloutScope rollout_mode(policy);
      const at::NoGradGuard no_grad;
      return engine.generate(reqs);
    };
    const std::vector<rollout::GenerateOutput> first = generate();
    REQUIRE(engine.last_stats().graphs_captured > 0);
    const double first_mean = gap(policy, reqs, first).mean;

    redraw_adapters(policy, 6);  // the "optimizer step"
    const std::vector<rollout::GenerateOutput> second = generate();
    const rollout::EngineStats& st = engine.last_stats();
    const auto [max_diff, mean_diff] = gap(policy, reqs, second);
    const double stale_mean = gap(policy, reqs, first).mean;  // the first rollout against the updated adapters
    WARN("kept graphs, LoRA, " << quant << " weights: |dlogp| vs the updated policy max " << max_diff << " mean "
                               << mean_diff << " (first rollout vs its own adapters: mean " << first_mean
                               << "; vs the updated ones: " << stale_mean << "); " << st.graph_steps << " of "
                               << st.steps << " steps from graphs, " << st.graphs_captured << " captured");
    CHECK(st.graphs_captured == 0);
    CHECK(st.graph_steps > st.steps / 2);
    CHECK(std::isfinite(max_diff));
    // BF16 adapter copies against the policy's FP32 adapters: the gap of the first rollout,
    // which ran the graphs it captured, bounds what a correct replay shows.
    CHECK(mean_diff < 0.1);
    CHECK(mean_diff < 2 * first_mean + 0.01);
    CHECK(stale_mean > 3 * mean_diff);
  }
}
