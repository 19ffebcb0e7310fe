// Each validation rule fires with its message and names where the value came from.
#include "core/util/error.h"
#include "core/recipe/validate.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::recipe;
using namespace fp8rl::hf;
using fp8rl::test::TempDir;

namespace {

// A valid recipe needing no files: the tiny preset on the synthetic task.
std::vector<std::string> valid() {
  return {"model.init_preset=tiny", "data.synthetic_task=addition", "reward.type=synthetic"};
}
ModelShape check(std::vector<std::string> extra) {
  auto o = valid();
  o.insert(o.end(), extra.begin(), extra.end());
  return validate_recipe(load_defaults(o));
}

}  // namespace

TEST_CASE("the minimal valid recipe passes and reports the model shape", "[validate]") {
  ModelShape s = check({});
  CHECK(s.model_type == "qwen3");
  CHECK(s.num_hidden_layers == 4);
}

TEST_CASE("model: exactly one of path and init_preset, and path must hold config.json", "[validate]") {
  REQUIRE_THROWS_CONTAINING(validate_recipe(load_defaults({"data.synthetic_task=copy", "reward.type=synthetic"})),
                            ConfigError, "set exactly one of model.path");
  REQUIRE_THROWS_CONTAINING(check({"model.path=/x"}), ConfigError, "set exactly one of model.path");
  REQUIRE_THROWS_CONTAINING(check({"model.init_preset=", "model.path=/no/such/dir"}), ConfigError,
                            "no such file or directory '/no/such/dir'");
  TempDir dir;
  dir.write("m/config.json", "{\"model_type\": \"qwen3\", \"vocab_size\": 10}");
  REQUIRE_THROWS_CONTAINING(check({"model.init_preset=", "model.path=" + (dir.path() / "m").string()}), ConfigError,
                            "missing required key 'hidden_size'");
  dir.write("n/config.json", "{not json");
  REQUIRE_THROWS_CONTAINING(check({"model.init_preset=", "model.path=" + (dir.path() / "n").string()}), ConfigError,
                            "not valid JSON");
}

TEST_CASE("BF16 layer counts must fit the model", "[validate]") {
  check({"quantization.num_first_layers_in_bf16=2", "quantization.num_last_layers_in_bf16=2"});
  REQUIRE_THROWS_CONTAINING(check({"quantization.num_first_layers_in_bf16=3", "quantization.num_last_layers_in_bf16=2"}),
                            ConfigError, "exceed the model's 4 decoder layers");
  REQUIRE_THROWS_CONTAINING(check({"quantization.num_first_layers_in_bf16=-1"}), ConfigError, "must be >= 0");
}

TEST_CASE("block scaling requires its companion keys (ROLL's rule)", "[validate]") {
  REQUIRE_THROWS_CONTAINING(check({"quantization.fmt=e5m2"}), ConfigError, "block scaling");
  REQUIRE_THROWS_CONTAINING(check({"quantization.fmt=e5m2"}), ConfigError, "requires fmt: e4m3");
  REQUIRE_THROWS_CONTAINING(check({"quantization.weight_block_size=[128]"}), ConfigError, "must be [out, in]");
  REQUIRE_THROWS_CONTAINING(check({"quantization.weight_block_size=[64, 64]"}), ConfigError, "only [128, 128]");
  REQUIRE_THROWS_CONTAINING(check({"quantization.activation_scaling=token"}), ConfigError, "1x128 activation groups");
  REQUIRE_THROWS_CONTAINING(check({"quantization.weight_scaling=channel"}), ConfigError,
                            "weight_scaling: channel pairs with activation_scaling: token, got group");
  REQUIRE_THROWS_CONTAINING(check({"quantization.weight_scaling=tensor", "quantization.activation_scaling=token"}),
                            ConfigError, "weight_scaling: tensor pairs with activation_scaling: tensor");
  check({"quantization.weight_scaling=channel", "quantization.activation_scaling=token"});
  REQUIRE_THROWS_CONTAINING(check({"quantization.weight_scaling=channel", "quantization.activation_scaling=token",
                                   "quantization.fmt=e5m2"}),
                            ConfigError, "no E5M2 x E5M2 kernel");
  // The BF16 baseline inherits FP8 knobs it does not use: not an error.
  check({"quantization.quant_method=none", "quantization.fmt=e5m2"});
}

TEST_CASE("MoE models require block quantization", "[validate]") {
  TempDir dir;
  dir.write("moe/config.json",
            R"({"model_type": "qwen3_moe", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_experts": 8, "moe_intermediate_size": 32})");
  std::string path = "model.path=" + (dir.path() / "moe").string();
  ModelShape s = check({"model.init_preset=", path});
  CHECK(s.is_moe());
  REQUIRE_THROWS_CONTAINING(check({"model.init_preset=", path, "quantization.weight_scaling=tensor",
                                   "quantization.activation_scaling=tensor"}),
                            ConfigError, "mixture of experts (8 experts): FP8 for MoE requires weight_scaling: block");
}

TEST_CASE("TIS cap > 1, dual clip > 1 and above the PPO range", "[validate]") {
  REQUIRE_THROWS_CONTAINING(check({"algorithm.tis_cap=1"}), ConfigError, "truncated-IS cap must be > 1");
  check({"algorithm.tis_cap=1", "algorithm.tis_level=none"});  // no TIS, no cap
  REQUIRE_THROWS_CONTAINING(check({"algorithm.tis_mode=mask", "algorithm.tis_mask_lower=1.5"}), ConfigError,
                            "tis_mask_lower");
  REQUIRE_THROWS_CONTAINING(check({"algorithm.clip_ratio_c=0.5"}), ConfigError, "dual-clip bound must be > 1");
  REQUIRE_THROWS_CONTAINING(check({"algorithm.clip_ratio_c=1.1", "algorithm.clip_ratio_high=0.28"}), ConfigError,
                            "must exceed 1 + clip_ratio_high");
  check({"algorithm.clip_ratio_c=3"});
  REQUIRE_THROWS_CONTAINING(check({"algorithm.clip_ratio_low=1"}), ConfigError, "must be in [0, 1)");
  REQUIRE_THROWS_CONTAINING(check({"algorithm.kl_loss_coef=-1"}), ConfigError, "must be >= 0");
}

TEST_CASE("rollout ranges", "[validate]") {
  REQUIRE_THROWS_CONTAINING(check({"rollout.n=0"}), ConfigError,
                            "command line 'rollout.n=0': rollout.n: must be in [1, 65536], got 0");
  REQUIRE_THROWS_CONTAINING(check({"rollout.top_p=0"}), ConfigError, "must be in (0, 1]");
  REQUIRE_THROWS_CONTAINING(check({"rollout.top_k=0"}), ConfigError, "-1 (off) or >= 1");
  REQUIRE_THROWS_CONTAINING(check({"rollout.gpu_memory_utilization=1.5"}), ConfigError, "must be in (0, 1]");
  REQUIRE_THROWS_CONTAINING(check({"rollout.temperature=-0.1"}), ConfigError, "must be >= 0");
  // 1 / temperature overflows float32 far below this; the trainer skipped every update.
  REQUIRE_THROWS_CONTAINING(check({"rollout.temperature=1e-300"}), ConfigError, "must be 0 (greedy) or a finite value >= 0.0001");
  check({"rollout.temperature=0"});
}

// Sizes the trainer narrows to 32 bits or allocates by have upper bounds: a typo like 2^40 was a
// wrapped value, an internal check, "launched 0 ranks" with exit 0, or host memory growing until
// the machine ran out.
TEST_CASE("sizes and counts have upper bounds", "[validate]") {
  for (const char* o : {"data.train_batch_size=1099511627776", "data.synthetic_num_prompts=9223372036854775807",
                        "data.max_prompt_length=9223372036854775807", "rollout.max_response_length=4294967297",
                        "rollout.n=4294967304", "rollout.max_num_seqs=2147483648", "trainer.n_gpus_per_node=4294967296",
                        "trainer.ppo_mini_batch_size=1099511627776", "trainer.ppo_micro_batch_size_per_gpu=1099511627776",
                        "sft.batch_size=4294967296", "lora.rank=9223372036854775807"}) {
    INFO(o);
    const std::string key = std::string(o).substr(0, std::string(o).find('='));
    REQUIRE_THROWS_CONTAINING(check({o}), ConfigError, key + ": must be in [");
  }
  REQUIRE_THROWS_CONTAINING(check({"lora.rank=8", "lora.alpha=1e308"}), ConfigError, "lora.alpha: must be a finite value <= 1e6");
  REQUIRE_THROWS_CONTAINING(check({std::string("trainer.experiment_name=a\tb")}), ConfigError,
                            "no control characters");
}

TEST_CASE("LoRA rules", "[validate]") {
  check({"lora.rank=16", "lora.target_modules=[q_proj, v_proj]"});
  REQUIRE_THROWS_CONTAINING(check({"lora.rank=-1"}), ConfigError, "lora.rank: must be in [0, 65536], got -1");
  REQUIRE_THROWS_CONTAINING(check({"lora.rank=8", "lora.alpha=0"}), ConfigError, "must be > 0");
  REQUIRE_THROWS_CONTAINING(check({"lora.rank=8", "lora.target_modules=[q_prj]"}), ConfigError,
                            "did you mean 'q_proj'");
  REQUIRE_THROWS_CONTAINING(check({"lora.rank=8", "lora.target_modules=[]"}), ConfigError, "at least one module");
}

TEST_CASE("data and reward rules", "[validate]") {
  REQUIRE_THROWS_CONTAINING(check({"data.train_files=[a.jsonl]"}), ConfigError, "set exactly one of data.train_files");
  REQUIRE_THROWS_CONTAINING(check({"data.synthetic_task=", "reward.type=math", "data.train_files=[/no/file.jsonl]"}),
                            ConfigError, "no such file or directory '/no/file.jsonl'");
  REQUIRE_THROWS_CONTAINING(check({"reward.type=math"}), ConfigError, "scored by reward.type: synthetic");
  TempDir dir;
  auto f = dir.write("d.jsonl", "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n");
  auto files = std::vector<std::string>{"data.synthetic_task=", "data.train_files=[" + f + "]"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), files.begin(), files.end());
    return check(extra);
  };
  with({"reward.type=math"});
  REQUIRE_THROWS_CONTAINING(with({"reward.type=synthetic"}), ConfigError, "data.synthetic_task, which is not set");
  REQUIRE_THROWS_CONTAINING(with({"reward.type=command"}), ConfigError, "needs a command");
  REQUIRE_THROWS_CONTAINING(with({"reward.type=regex"}), ConfigError, "needs a pattern");
  REQUIRE_THROWS_CONTAINING(with({"reward.type=regex", "reward.pattern=(ab"}), ConfigError, "not a valid regex");
  with({"reward.type=regex", "reward.pattern=^\\d+$"});
  REQUIRE_THROWS_CONTAINING(check({"reward.overlong_buffer_len=2000", "rollout.max_response_length=1024"}), ConfigError,
                            "smaller than rollout.max_response_length");
  REQUIRE_THROWS_CONTAINING(check({"reward.timeout_s=0"}), ConfigError, "reward.timeout_s: must be > 0");
}

TEST_CASE("trainer rules", "[validate]") {
  REQUIRE_THROWS_CONTAINING(check({"trainer.lr=0"}), ConfigError, "trainer.lr: must be > 0");
  REQUIRE_THROWS_CONTAINING(check({"data.train_batch_size=32", "trainer.ppo_mini_batch_size=12"}), ConfigError,
                            "must divide data.train_batch_size (32, command line 'data.train_batch_size=32'), got 12");
  REQUIRE_THROWS_CONTAINING(check({"trainer.experiment_name=a/b"}), ConfigError, "plain directory name");
  REQUIRE_THROWS_CONTAINING(check({"trainer.test_freq=5"}), ConfigError, "needs data.val_files");
  REQUIRE_THROWS_CONTAINING(check({"trainer.adam_beta2=1"}), ConfigError, "must be in [0, 1)");
}

TEST_CASE("logging and checkpoint rules", "[validate]") {
  REQUIRE_THROWS_CONTAINING(check({"logging.logger=[console, wandb]"}), ConfigError, "'wandb' is not one of");
  REQUIRE_THROWS_CONTAINING(check({"checkpoint.resume_mode=resume_path"}), ConfigError, "needs the checkpoint directory");
  REQUIRE_THROWS_CONTAINING(check({"checkpoint.resume_mode=resume_path", "checkpoint.resume_from_path=/no/ckpt"}),
                            ConfigError, "no such file or directory");
  REQUIRE_THROWS_CONTAINING(check({"checkpoint.save_freq=-2"}), ConfigError, "must be >= 0");
}

TEST_CASE("rule errors name the file and line that set the value", "[validate]") {
  TempDir dir;
  auto path = dir.write("r.yaml",
                        "model:\n  init_preset: tiny\n"
                        "data:\n  synthetic_task: copy\n"
                        "reward:\n  type: synthetic\n"
                        "algorithm:\n  tis_cap: 0.5\n");
  REQUIRE_THROWS_CONTAINING(validate_recipe(load_recipe(path)), ConfigError, path + ":8: algorithm.tis_cap");
}
