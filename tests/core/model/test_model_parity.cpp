// Logit parity with HF transformers: tiny random models of each family made by
// scripts/make_model_fixtures.py (config.json, BF16-representable weights, and HF's float32
// logits for fixed ids; eager attention, CPU).
//
// Tolerance: |ours - hf| <= 1e-4 + 1e-4 * |hf|. Both sides do the same float32 math on the same
// weights; they differ only in op order (SDPA's fused softmax vs eager's explicit one, matmul
// blocking, repeat_interleave vs expand). Each such reordering moves a float32 result by a few
// ulp (~1e-7 relative); through 3 layers on O(1) logits that stays orders of magnitude below
// 1e-4, while any real mistake (missing norm weight, wrong RoPE half, bias, scaling) is > 1e-2.
#include <filesystem>
#include <string>

#include "core/model/decoder.h"
#include "core/hf/safetensors.h"
#include "tests/core/model/model_test_util.h"

using namespace fp8rl;
using namespace fp8rl::hf;
using namespace fp8rl::model;

namespace {

void check_family(const std::string& family, bool expect_tied, bool expect_llama3) {
  const std::string dir = std::string(FP8RL_MODEL_DATA) + "/" + family;
  INFO("fixture " << dir);
  if (!std::filesystem::exists(dir + "/config.json"))
    FAIL("missing fixture " << dir << ": run `python3 scripts/make_model_fixtures.py --out-dir tests/data/models`"
                             " (needs torch + transformers) from the repo root");
  LoadOptions o;
  o.dtype = at::kFloat;
  const CausalLM m = CausalLM::load(dir, o);
  CHECK(m.config().shape.tie_word_embeddings == expect_tied);
  CHECK((m.config().rope_scaling.type == "llama3") == expect_llama3);

  const safetensors::File ref(dir + "/logits.safetensors");
  const at::Tensor ids = fp8rl::test::read_tensor(ref, "input_ids");  // [2, 11] int64
  const at::Tensor want = fp8rl::test::read_tensor(ref, "logits");    // [2, 11, 512] float32
  const at::Tensor got = m.logits(ids);
  REQUIRE(got.sizes() == want.sizes());
  const double diff = fp8rl::test::max_abs_diff(got, want);
  const double excess = fp8rl::test::worst_excess(got, want, 1e-4, 1e-4);
  INFO("max |ours - hf| = " << diff << " (max |hf| = " << want.abs().max().item<double>() << ")");
  CHECK(excess <= 0.0);
  // The hidden-states variant is the same forward without lm_head.
  const at::Tensor via_hidden = m.lm_head(m.hidden_states(ids));
  CHECK(fp8rl::test::max_abs_diff(via_hidden, got) == 0.0);
  WARN(family << ": max |ours - hf| logit difference " << diff);
}

}  // namespace

TEST_CASE("parity with HF: qwen3 (q/k norm, tied embeddings)") { check_family("qwen3", true, false); }
TEST_CASE("parity with HF: qwen2 (q/k/v bias)") { check_family("qwen2", false, false); }
TEST_CASE("parity with HF: llama (llama3 rope scaling)") { check_family("llama", false, true); }
