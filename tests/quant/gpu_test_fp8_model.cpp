// FP8 model on the GPU at Qwen3-0.6B shape: weight memory matches the precision plan (one FP8
// copy, no BF16 shadow of quantized layers), and the FP8 forward's next-token distribution stays
// close to the BF16 one (the rollout/trainer mismatch that TIS corrects). Then the engine's
// forward (residual adds inside the norms) against the stages one by one.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <filesystem>
#include <vector>

#include "core/hf/config.h"
#include "core/model/attention.h"
#include "core/model/decoder.h"
#include "core/model/random_checkpoint.h"
#include "core/recipe/model_presets.h"
#include "quant/fp8_model.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::quant;
using namespace fp8rl::recipe;
using namespace fp8rl::hf;

namespace {
int64_t allocated() {
  c10::cuda::device_synchronize();
  return static_cast<int64_t>(
      c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current);  // aggregate pool
}
}  // namespace

TEST_CASE("FP8 Qwen3-0.6B: weight memory follows the plan, and BF16 vs FP8 next-token KL", "[gpu][fp8_model]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::empty({1}, at::kCUDA);  // initialise the caching allocator before reading its stats
  fp8rl::test::TempDir dir;
  const std::string path = (dir.path() / "qwen3-0.6b").string();
  model::write_random_checkpoint(path, "qwen3", *qwen3_preset("0.6b"), 7);
  const ModelShape shape = read_hf_config(path);
  QuantizationConfig q;
  const PrecisionPlan plan = make_precision_plan(shape, q, "bfloat16");
  model::LoadOptions opts{at::kBFloat16, at::kCUDA};

  const int64_t base = allocated();
  model::CausalLM dense = model::CausalLM::load(path, opts);
  const int64_t dense_bytes = allocated() - base;
  opts = fp8_load_options(plan, q, opts);
  model::CausalLM fp8 = model::CausalLM::load(path, opts);
  const int64_t fp8_bytes = allocated() - base - dense_bytes;
  const int64_t planned = plan.fp8_bytes + plan.bf16_bytes;
  // Bytes the FP8 model's tensors hold, walked with the tensor visitor: dense tensors, biases,
  // FP8 data and scales (RoPE's buffer is not a weight). At this shape q/k/v (2048, 1024, 1024
  // rows) and gate/up (3072 each) are 128-aligned and run fused.
  int64_t tensor_bytes = 0;
  fp8.visit([&](const model::ModelTensor& t) {
    if (t.role != model::TensorRole::buffer) tensor_bytes += static_cast<int64_t>(t.tensor.nbytes());
  });
  CHECK(fp8.layers()[0].qkv.specs.size() == 1);
  CHECK(fp8.layers()[0].qkv.specs[0].fused());
  WARN("weights on GPU: BF16 model " << dense_bytes / 1e6 << " MB, FP8 model " << fp8_bytes / 1e6
                                     << " MB (allocator); FP8 model's tensors " << tensor_bytes / 1e6
                                     << " MB; precision plan " << planned / 1e6 << " MB");
  // The model's own tensors are what the plan counts (block scales padded along K to 4 blocks
  // cost nothing at these shapes); 0.1 % covers the RoPE table and other small buffers.
  CHECK(std::abs(static_cast<double>(tensor_bytes - planned)) < 1e-3 * planned);
  // No BF16 shadow of the quantized layers survives the load (the allocator's figure includes
  // its block rounding, a few percent).
  CHECK(fp8_bytes < 0.7 * dense_bytes);
  CHECK(std::abs(static_cast<double>(fp8_bytes - planned)) < 0.06 * planned);

  at::manual_seed(5);
  const at::Tensor ids = at::randint(0, shape.vocab_size, {2, 64}, at::TensorOptions().device(at::kCUDA).dtype(at::kLong));
  const at::Tensor lp_dense = at::log_softmax(dense.logits(ids).to(at::kFloat), -1);  // [2, 64, V]
  const at::Tensor lp_fp8 = at::log_softmax(fp8.logits(ids).to(at::kFloat), -1);
  const double kl = (lp_dense.exp() * (lp_dense - lp_fp8)).sum(-1).mean().item<double>();
  const double max_dlogp = (lp_dense - lp_fp8).abs().max().item<double>();
  const double top1 = (lp_dense.argmax(-1) == lp_fp8.argmax(-1)).to(at::kFloat).mean().item<double>();
  WARN("BF16 vs FP8 (random init): mean KL " << kl << ", max |dlogp| " << max_dlogp << ", top-1 agreement " << top1);
  // A random model's distributions are near uniform, so this only bounds gross errors: a wrong
  // scale or layout gives KL of order 1.
  CHECK(kl < 1e-2);
}

// The engine's forward carries the residual stream unsummed, so each residual add runs inside
// the next RMSNorm's kernel (core/model/decoder.cpp). Those kernels are bit for bit the add and
// then the norm, so under InferenceMode forward must equal the stages run one by one (embed,
// decoder_layer after decoder_layer, final_norm) exactly, BF16 and FP8 (where the norm kernel
// also quantizes). Hidden 2048: above the 1024 where the fused norms stand aside.
TEST_CASE("the engine's forward with residual adds inside the norms equals the stages one by one, bit for bit",
          "[gpu][fp8_model]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  fp8rl::test::TempDir dir;
  const std::string path = (dir.path() / "qwen3-h2048").string();
  ModelShape shape = *qwen3_preset("0.6b");
  shape.hidden_size = 2048;
  shape.num_hidden_layers = 3;
  shape.vocab_size = 8192;
  model::write_random_checkpoint(path, "qwen3", shape, 9);
  QuantizationConfig q;
  const PrecisionPlan plan = make_precision_plan(read_hf_config(path), q, "bfloat16");
  for (const bool fp8 : {false, true}) {
    INFO((fp8 ? "FP8" : "BF16"));
    model::LoadOptions opts;
    opts.dtype = at::kBFloat16;
    opts.device = at::kCUDA;
    if (fp8) opts = fp8_load_options(plan, q, opts);
    const model::CausalLM m = model::CausalLM::load(path, opts);
    c10::InferenceMode inference;
    model::VarlenAttention attention(/*inference_kernel=*/true);
    const std::vector<int64_t> lengths{20, 17};
    const model::AttentionContext ctx = model::whole_sequences(lengths, at::kCUDA, &attention);
    at::manual_seed(6);
    const auto longs = at::TensorOptions().device(at::kCUDA).dtype(at::kLong);
    const at::Tensor ids = at::randint(0, shape.vocab_size, {37}, longs);
    const at::Tensor positions = at::cat({at::arange(20, longs), at::arange(17, longs)});
    const at::Tensor fused = m.forward(ids, positions, ctx);  // [37, 2048]
    const model::Rope r = m.rope(positions);
    at::Tensor x = m.embed(ids);
    for (int64_t i = 0; i < shape.num_hidden_layers; ++i) x = m.decoder_layer(i, x, r, ctx);
    const at::Tensor stepwise = m.final_norm(x);
    REQUIRE(at::isfinite(fused).all().item<bool>());
    CHECK(at::equal(fused, stepwise));
  }
}
