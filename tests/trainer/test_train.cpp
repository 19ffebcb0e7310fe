// The RL loop end to end on CPU: a tiny quickstart run is resumable exactly -- N steps equal
// N/2 steps, a resume, and N/2 more (identical metrics stream, weights within float rounding),
// with the resume point in the middle of an epoch -- and damaged checkpoints are refused.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/hf/safetensors.h"
#include "core/util/error.h"
#include "quant/fp8_model.h"
#include "tests/catch.h"
#include "tests/trainer/trainer_test_util.h"
#include "trainer/checkpoint_store.h"
#include "trainer/evaluate.h"
#include "trainer/export.h"
#include "trainer/policy.h"
#include "trainer/rewards.h"
#include "trainer/rl_step.h"
#include "trainer/setup.h"
#include "rollout/engine.h"
#include "trainer/tasks.h"
#include "trainer/tensor_file.h"
#include "trainer/train.h"

using namespace fp8rl;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// 6 prompts, 4 per step: step 2 ends inside epoch 1. `name`: trainer.experiment_name too.
std::vector<std::string> short_run(int64_t steps, const char* name = nullptr) {
  std::vector<std::string> o{"sft.steps=5", "sft.batch_size=8", "data.synthetic_num_prompts=6", "data.train_batch_size=4",
                             "trainer.ppo_mini_batch_size=2", "trainer.ppo_micro_batch_size_per_gpu=3", "rollout.n=3",
                             "rollout.max_response_length=6", "checkpoint.save_freq=2",
                             "trainer.total_training_steps=" + std::to_string(steps), "logging.logger=[jsonl]"};
  if (name != nullptr) o.push_back(std::string("trainer.experiment_name=") + name);
  return o;
}

// Overrides that resume from one checkpoint directory (checkpoint.resume_mode=resume_path).
void resume_from(std::vector<std::string>& overrides, const fs::path& checkpoint) {
  overrides.push_back("checkpoint.resume_mode=resume_path");
  overrides.push_back("checkpoint.resume_from_path=" + checkpoint.string());
}

// metrics.jsonl without the wall-clock and peak-memory entries (neither repeats between runs).
std::vector<json> metrics(const fs::path& run) {
  std::vector<json> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    for (auto it = j.begin(); it != j.end();)
      if (it.key().rfind("timing_s/", 0) == 0 || it.key().rfind("perf/", 0) == 0 || it.key().rfind("memory/", 0) == 0)
        it = j.erase(it);
      else ++it;
    out.push_back(j);
  }
  return out;
}

}  // namespace

TEST_CASE("N steps equal N/2 steps, resume, N/2 steps (across an epoch boundary)", "[trainer][train][resume]") {
  test::TempDir a, b;
  std::vector<std::string> full = short_run(4, "run");
  REQUIRE(trainer::run_train(test::quickstart(a, full)) == 0);

  std::vector<std::string> half = short_run(2, "run");
  REQUIRE(trainer::run_train(test::quickstart(b, half)) == 0);
  std::vector<std::string> rest = short_run(4, "run");
  rest.push_back("checkpoint.resume_mode=auto");
  REQUIRE(trainer::run_train(test::quickstart(b, rest)) == 0);

  const fs::path ra = a.path() / "runs" / "run", rb = b.path() / "runs" / "run";
  const std::vector<json> ma = metrics(ra), mb = metrics(rb);
  REQUIRE(ma.size() == 4);
  REQUIRE(mb.size() == 4);
  for (size_t i = 0; i < ma.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(ma[i].dump() == mb[i].dump());
  }
  CHECK(ma[1]["data/epoch"] == 1);
  const auto wa = trainer::load_tensors((ra / "checkpoints" / trainer::checkpoint_dir_name(4) / "trainable.safetensors").string());
  const auto wb = trainer::load_tensors((rb / "checkpoints" / trainer::checkpoint_dir_name(4) / "trainable.safetensors").string());
  REQUIRE(wa.size() == wb.size());
  for (const auto& [name, t] : wa) CHECK(at::allclose(t, wb.at(name), 0, 1e-6));
}

// The epoch's permutation depends on the number of prompts: with other data the rest of the epoch
// would repeat some and skip others, so resuming onto a different count is refused by name.
TEST_CASE("resume with a different number of training prompts is refused", "[trainer][train][resume]") {
  test::TempDir dir;
  std::vector<std::string> o = short_run(2, "run");
  REQUIRE(trainer::run_train(test::quickstart(dir, o)) == 0);
  std::vector<std::string> more = short_run(4, "run");
  more.push_back("checkpoint.resume_mode=auto");
  more.push_back("data.synthetic_num_prompts=8");
  REQUIRE_THROWS_CONTAINING(trainer::run_train(test::quickstart(dir, more)), ConfigError,
                            "trainer_state.json: the run drew from 6 training prompts, the recipe's data");
}

// --resume at an older step of the same run: the later checkpoints are that run's abandoned
// branch, set aside, so resume auto continues the new branch afterwards.
TEST_CASE("resume at an older step sets the later checkpoints aside", "[trainer][train][resume]") {
  test::TempDir dir;
  std::vector<std::string> o = short_run(4, "run");
  REQUIRE(trainer::run_train(test::quickstart(dir, o)) == 0);
  const fs::path ckpts = dir.path() / "runs" / "run" / "checkpoints";
  std::vector<std::string> back = short_run(3, "run");
  resume_from(back, ckpts / trainer::checkpoint_dir_name(2));
  REQUIRE(trainer::run_train(test::quickstart(dir, back)) == 0);
  trainer::CheckpointStore store(dir.path() / "runs" / "run", 0);
  CHECK(store.latest_good()->filename() == trainer::checkpoint_dir_name(3));
  int aside = 0;
  for (const auto& e : fs::directory_iterator(ckpts))
    if (e.path().filename().string().rfind("superseded_after_step_00000002.", 0) == 0) {
      CHECK(fs::exists(e.path() / trainer::checkpoint_dir_name(4) / "manifest.json"));
      ++aside;
    }
  CHECK(aside == 1);
  CHECK(metrics(dir.path() / "runs" / "run").size() == 3);
}

// A checkpoint holds adapters of every target module; a recipe that trains fewer would drop the
// others' training without a word.
TEST_CASE("resuming with fewer LoRA target modules than the checkpoint trained is refused", "[trainer][train][resume]") {
  test::TempDir dir;
  std::vector<std::string> o = short_run(2, "run");
  REQUIRE(trainer::run_train(test::quickstart(dir, o)) == 0);
  std::vector<std::string> r = short_run(4);
  r.push_back("trainer.experiment_name=fewer");
  resume_from(r, dir.path() / "runs" / "run" / "checkpoints" / trainer::checkpoint_dir_name(2));
  r.push_back("lora.target_modules=[q_proj]");
  REQUIRE_THROWS_CONTAINING(trainer::run_train(test::quickstart(dir, r)), ConfigError,
                            "which this recipe does not train (lora.target_modules or lora.rank changed?)");
}

TEST_CASE("a damaged checkpoint is refused by name and resume auto falls back to the previous one", "[trainer][train][resume]") {
  test::TempDir dir;
  std::vector<std::string> o = short_run(4, "run");
  REQUIRE(trainer::run_train(test::quickstart(dir, o)) == 0);
  const fs::path ckpts = dir.path() / "runs" / "run" / "checkpoints";
  const fs::path last = ckpts / trainer::checkpoint_dir_name(4);
  {
    std::fstream f(last / "optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  REQUIRE_THROWS_CONTAINING(trainer::verify_checkpoint(last), ConfigError, "optimizer.safetensors");
  trainer::CheckpointStore store(dir.path() / "runs" / "run", 2);
  std::vector<std::string> skipped;
  const std::optional<fs::path> good = store.latest_good(&skipped);
  REQUIRE(good);
  CHECK(good->filename() == trainer::checkpoint_dir_name(2));
  CHECK(skipped.size() == 1);
  // --resume PATH at the damaged one: refused before anything loads.
  std::vector<std::string> r = short_run(6, "run");
  resume_from(r, last);
  REQUIRE_THROWS_AS(trainer::run_train(test::quickstart(dir, r)), ConfigError);
}

TEST_CASE("train: a greedy rollout temperature, one sample per prompt and responses past the model's context are refused before the run starts",
          "[trainer][train]") {
  test::TempDir dir;
  REQUIRE_THROWS_CONTAINING(trainer::run_train(test::quickstart(dir, {"rollout.temperature=0"})), ConfigError,
                            "rollout.temperature must be > 0");
  REQUIRE_THROWS_CONTAINING(trainer::run_train(test::quickstart(dir, {"rollout.n=1"})), ConfigError,
                            "rollout.n must be >= 2 for RL training");
  // The tiny preset's context is 40960 tokens.
  REQUIRE_THROWS_CONTAINING(
      trainer::run_train(test::quickstart(dir, {"data.max_prompt_length=40000", "rollout.max_response_length=1000"})),
      ConfigError, "41000 tokens exceed the model's context of 40960");
  CHECK_FALSE(fs::exists(dir.path() / "runs"));  // refused before the run directory was made
}

TEST_CASE("export: the merged HF model computes what the trained LoRA policy computes", "[trainer][export]") {
  test::TempDir dir;
  std::vector<std::string> o = short_run(2, "run");
  o.push_back("quantization.quant_method=none");
  o.push_back("trainer.lr=0.05");  // adapters far from zero, so the merge matters
  const recipe::LoadedRecipe loaded = test::quickstart(dir, o);
  REQUIRE(trainer::run_train(loaded) == 0);
  const fs::path run = dir.path() / "runs" / "run";
  const fs::path out = dir.path() / "exported";
  const std::string ckpt = trainer::export_run(run.string(), out.string());
  CHECK(fs::path(ckpt).filename() == trainer::checkpoint_dir_name(2));
  CHECK(fs::exists(out / "config.json"));
  CHECK(fs::exists(out / "tokenizer.json"));
  CHECK(fs::exists(out / "adapter" / "adapter_model.safetensors"));
  CHECK(json::parse(test::read_file(out / "adapter" / "adapter_config.json"))["r"] == 8);
  const auto adapter = trainer::load_tensors((out / "adapter" / "adapter_model.safetensors").string());
  CHECK(adapter.count("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") == 1);

  // The trained policy: the warm-up model plus the checkpoint's adapters.
  trainer::Policy trained(loaded.recipe, (run / "sft_model").string(), at::kCPU);
  const auto saved = trainer::load_tensors((fs::path(ckpt) / "trainable.safetensors").string());
  {
    at::NoGradGuard g;
    for (const model::ModelTensor& t : trained.trainable()) t.tensor.detach().copy_(saved.at(t.name));
  }
  std::vector<std::string> dense = o;
  dense.push_back("lora.rank=0");
  const trainer::Policy merged(test::quickstart(dir, dense).recipe, out.string(), at::kCPU);
  trainer::SequenceBatch b;
  b.prompts = {{51, 43, 52, 61}, {57, 57, 43, 49, 61}};
  b.responses = {{54, 257}, {49, 48, 54, 257}};
  at::NoGradGuard g;
  const at::Tensor lt = trained.response_logprobs(b, 1.0).logp, lm = merged.response_logprobs(b, 1.0).logp;
  CHECK(at::allclose(lt, lm, 1e-4, 1e-4));
  CHECK(lt.abs().sum().item<double>() > 0);
}

TEST_CASE("eval: a dense run's final checkpoint scores what the run's own last validation scored", "[trainer][eval]") {
  test::TempDir dir;
  const std::string val = (dir.path() / "val.jsonl").string();
  trainer::write_task_jsonl("addition", 6, 1, val);  // the 6 training prompts (data.seed 1): partly memorized: the score is neither 0 nor 1
  std::vector<std::string> o = short_run(2);
  for (const char* s : {"trainer.experiment_name=run", "quantization.quant_method=none", "lora.rank=0",
                               "trainer.lr=1e-3", "trainer.test_freq=2", "sft.steps=30"})
    o.push_back(s);
  o.push_back("data.val_files=[" + val + "]");
  REQUIRE(trainer::run_train(test::quickstart(dir, o)) == 0);
  const fs::path run = dir.path() / "runs" / "run";
  const std::vector<json> m = metrics(run);
  REQUIRE(m.back()["step"] == 2);
  const double logged = m.back()["val/accuracy"].get<double>();

  const trainer::EvalResult r = trainer::evaluate_checkpoint(run.string(), {"trainer.device=cpu"});
  CHECK(r.step == 2);
  CHECK(r.prompts == 6);
  CHECK(logged > 0);
  CHECK(r.quant_method == "none");
  CHECK(r.accuracy == logged);  // same weights, same greedy engine, same prompts
  CHECK(json::parse(r.to_json())["val/accuracy"].get<double>() == logged);
  {
    // The same score without validate(): the exported model's greedy responses to the 6 prompts,
    // decoded here and scored one by one. (validate() once scored every example against a
    // dangling view of a response's text.)
    const fs::path exported = dir.path() / "exported";
    trainer::export_run(run.string(), exported.string());
    std::vector<std::string> e = o;
    e.push_back("model.init_preset=");
    e.push_back("model.path=" + exported.string());
    const recipe::LoadedRecipe el = test::quickstart(dir, e);
    const trainer::TaskSetup task = trainer::prepare_task(el, dir.path() / "independent");
    REQUIRE(task.examples.size() == 6);
    trainer::Policy policy(el.recipe, task.model_dir, at::kCPU);
    rollout::Engine engine(policy.model(), trainer::engine_config(el.recipe.rollout, *task.tokenizer));
    std::vector<rollout::GenerateRequest> requests;
    for (const trainer::Example& ex : task.examples) {
      rollout::GenerateRequest q;
      q.prompt.assign(ex.prompt_ids.begin(), ex.prompt_ids.end());
      q.params.max_new_tokens = static_cast<int32_t>(el.recipe.rollout.max_response_length);
      q.params.stop_token_ids.assign(task.stop_ids.begin(), task.stop_ids.end());
      q.sampling.temperature = 0;
      requests.push_back(q);
    }
    at::NoGradGuard no_grad;
    const std::vector<rollout::GenerateOutput> outs = engine.generate(requests);
    const trainer::RewardFunction score = trainer::make_reward_function(el.recipe.reward, el.recipe.data.synthetic_task);
    int correct = 0;
    for (size_t i = 0; i < outs.size(); ++i) {
      const rollout::SampleOutput& so = outs[i].output.samples.at(0);
      std::vector<int32_t> ids(so.tokens.begin(), so.tokens.end());
      if (so.finish_reason != rollout::FinishReason::kLength && !ids.empty()) ids.pop_back();  // the stop token
      const trainer::Example& ex = task.examples[i];
      correct += score({ex.prompt, task.tokenizer->decode(ids), ex.answer}) >= 1.0 ? 1 : 0;
    }
    CHECK(static_cast<double>(correct) / 6.0 == r.accuracy);
  }
  // A checkpoint directory as a shell completes it (trailing slash) is the same checkpoint.
  CHECK(trainer::evaluate_checkpoint((run / "checkpoints" / trainer::checkpoint_dir_name(2)).string() + "/",
                                     {"trainer.device=cpu"}).step == 2);
  // An FP8 evaluator on request; no validation prompts is a clear error.
  CHECK(trainer::evaluate_checkpoint(run.string(), {"trainer.device=cpu", "quantization.quant_method=fp8"}).quant_method == "fp8");
  REQUIRE_THROWS_CONTAINING(trainer::evaluate_checkpoint(run.string(), {"trainer.device=cpu", "data.val_files=[]", "trainer.test_freq=0"}),
                            ConfigError, "no data.val_files");
}

// `-o runs` (meaning "under runs/") once renamed the directory away and deleted it, runs and all.
TEST_CASE("export: an existing directory holding more than an export is refused, not replaced", "[trainer][export]") {
  test::TempDir dir;
  const fs::path runs = dir.path() / "runs";
  fs::create_directories(runs / "some-run" / "checkpoints");
  std::ofstream(runs / "some-run" / "metrics.jsonl") << "{}\n";
  for (const std::string& target : {runs.string(), runs.string() + "/"})
    REQUIRE_THROWS_CONTAINING(trainer::export_run((dir.path() / "no-such-run").string(), target), ConfigError,
                              "holds 'some-run', which no export writes; refusing to replace it");
  CHECK(fs::exists(runs / "some-run" / "metrics.jsonl"));
}

// eval fixes lora.rank=0 and resume_mode=disable: a LoRA run with the KL loss, resumed from a
// checkpoint path, still evaluates (validate_recipe refuses the KL loss without LoRA). The new
// run's metrics.jsonl starts with the steps its checkpoint had.
TEST_CASE("eval: a LoRA run with the KL loss and a resume path evaluates", "[trainer][eval]") {
  test::TempDir dir;
  const std::string val = (dir.path() / "val.jsonl").string();
  trainer::write_task_jsonl("addition", 2, 1, val);
  std::vector<std::string> o = short_run(2);
  for (const char* s : {"trainer.experiment_name=first", "quantization.quant_method=none", "algorithm.use_kl_loss=true"})
    o.push_back(s);
  o.push_back("data.val_files=[" + val + "]");
  REQUIRE(trainer::run_train(test::quickstart(dir, o)) == 0);
  const fs::path first_ckpt = dir.path() / "runs" / "first" / "checkpoints" / trainer::checkpoint_dir_name(2);
  std::vector<std::string> again = o;
  again.push_back("trainer.experiment_name=second");
  again.push_back("trainer.total_training_steps=3");
  resume_from(again, first_ckpt);
  REQUIRE(trainer::run_train(test::quickstart(dir, again)) == 0);
  // The new run's metrics start at step 1: steps 1-2 from the checkpoint's copy, then its own.
  const std::vector<json> m = metrics(dir.path() / "runs" / "second");
  REQUIRE(m.size() == 3);
  CHECK(m[0]["step"] == 1);
  CHECK(m[2]["step"] == 3);
  fs::remove_all(dir.path() / "runs" / "first");  // the resume path is gone
  const trainer::EvalResult r = trainer::evaluate_checkpoint((dir.path() / "runs" / "second").string(), {"trainer.device=cpu"});
  CHECK(r.step == 3);
  CHECK(r.prompts == 2);
}

TEST_CASE("export --fp8: HF's FP8 layout, loaded as stored, computes what the dense export quantized at load computes", "[trainer][export]") {
  test::TempDir dir;
  std::vector<std::string> o = short_run(2, "run");
  o.push_back("trainer.lr=0.05");  // adapters far from zero: the merged weights are what gets quantized
  const recipe::LoadedRecipe loaded = test::quickstart(dir, o);  // FP8, first and last layer in BF16
  REQUIRE(trainer::run_train(loaded) == 0);
  const fs::path run = dir.path() / "runs" / "run";
  const fs::path dense = dir.path() / "dense", fp8 = dir.path() / "fp8";
  trainer::export_run(run.string(), dense.string());
  trainer::export_run(run.string(), fp8.string(), /*fp8=*/true);

  const json qc = json::parse(test::read_file(fp8 / "config.json"))["quantization_config"];
  CHECK(qc["quant_method"] == "fp8");
  CHECK(qc["weight_block_size"] == json::array({128, 128}));
  const std::vector<std::string> dense_modules = qc["modules_to_not_convert"].get<std::vector<std::string>>();
  CHECK(std::count(dense_modules.begin(), dense_modules.end(), "lm_head") == 1);
  CHECK(std::count(dense_modules.begin(), dense_modules.end(), "model.layers.0.self_attn.q_proj") == 1);  // a BF16 layer
  CHECK(std::count(dense_modules.begin(), dense_modules.end(), "model.layers.1.self_attn.q_proj") == 0);
  const safetensors::Checkpoint ck(fp8.string());
  CHECK(ck.get("model.layers.1.self_attn.q_proj.weight").dtype == safetensors::Dtype::F8_E4M3);
  CHECK(ck.get("model.layers.1.self_attn.q_proj.weight_scale_inv").dtype == safetensors::Dtype::F32);
  CHECK(ck.get("model.layers.0.self_attn.q_proj.weight").dtype == safetensors::Dtype::F32);  // model.dtype float32
  CHECK(!ck.contains("model.layers.0.self_attn.q_proj.weight_scale_inv"));

  // Both loaded with the run's FP8 quantization: the stored FP8 bytes are used as they are, the
  // dense export is quantized at load by the same quantizer -- the same model, bit for bit.
  model::LoadOptions base;
  base.dtype = at::kFloat;
  const model::CausalLM a = quant::load_causal_lm(fp8.string(), loaded.recipe.quantization, base);
  const model::CausalLM b = quant::load_causal_lm(dense.string(), loaded.recipe.quantization, base);
  const at::Tensor ids = at::tensor(std::vector<int64_t>{51, 43, 52, 61, 54, 57}).unsqueeze(0);
  const auto logits = [&](const model::CausalLM& m) {
    at::NoGradGuard g;  // only here: the training run below needs autograd
    return m.logits(ids);
  };
  CHECK(at::equal(logits(a), logits(b)));
  // A run that starts from that FP8 checkpoint exports it dequantized with its block scales: with
  // lr 0 (LoRA B stays 0) the dense export, quantized at load, is the FP8 checkpoint again.
  std::vector<std::string> o2 = short_run(1);
  for (const std::string& kv : {std::string("trainer.experiment_name=from-fp8"), std::string("trainer.lr=1e-30"),
                                std::string("sft.steps=0"), std::string("model.init_preset="), "model.path=" + fp8.string()})
    o2.push_back(kv);
  REQUIRE(trainer::run_train(test::quickstart(dir, o2)) == 0);
  const fs::path again = dir.path() / "again";
  trainer::export_run((dir.path() / "runs" / "from-fp8").string(), again.string());
  CHECK(!safetensors::Checkpoint(again.string()).contains("model.layers.1.self_attn.q_proj.weight_scale_inv"));
  const model::CausalLM c = quant::load_causal_lm(again.string(), loaded.recipe.quantization, base);
  CHECK(at::equal(logits(a), logits(c)));
  // And under quant_method none the FP8 checkpoint is refused by name, never silently dequantized.
  recipe::QuantizationConfig none = loaded.recipe.quantization;
  none.quant_method = "none";
  REQUIRE_THROWS_AS(quant::check_model_dir(fp8.string(), none), ConfigError);
}
