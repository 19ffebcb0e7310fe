#include "apps/commands.h"
#include "apps/launch_ranks.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/recipe/load.h"
#include "core/model/random_checkpoint.h"
#include "core/recipe/model_presets.h"
#include "core/recipe/validate.h"
#include "core/util/strings.h"
#include "core/recipe/run_dir.h"
#include "core/util/atomic_file.h"
#include "apps/bench_forward.h"
#include "apps/bench_gemm.h"
#include "quant/fp8_model.h"
#include "quant/precision_plan.h"
#include "quant/random_fp8_checkpoint.h"
#include "trainer/export.h"
#include "trainer/evaluate.h"
#include "trainer/policy.h"
#include "trainer/sft.h"
#include "trainer/tasks.h"
#include "trainer/world_env.h"
#include "trainer/train.h"

namespace fp8rl {

namespace fs = std::filesystem;

namespace {

// A ConfigError from a layer below the recipe that starts with a recipe key ("quantization.
// modules_in_bf16: pattern 'x' matches no module") gets the file:line or override that set it.
ConfigError located(const recipe::LoadedRecipe& loaded, const ConfigError& e) {
  const std::string msg = e.what();
  const auto colon = msg.find(": ");
  if (colon == std::string::npos) return e;
  const std::string key = msg.substr(0, colon);
  if (!loaded.sources.count(key)) return e;  // a default, or not a key: the message stands
  return ConfigError(loaded.where(key) + msg.substr(colon));
}

}  // namespace

int run_check(const CheckArgs& args) {
  if (args.list_keys) {
    if (!args.recipe.empty() || !args.overrides.empty() || args.plain)
      throw ConfigError("check --keys takes no recipe, overrides or --plain (it lists the schema)");
    std::cout << recipe::describe_keys();
    return kExitOk;
  }
  if (args.recipe.empty()) throw ConfigError("check: a recipe file is required (or --keys to list the schema)");
  recipe::LoadedRecipe loaded = recipe::load_recipe(args.recipe, args.overrides);
  const hf::ModelShape shape = recipe::validate_recipe(loaded);
  quant::PrecisionPlan plan;
  try {
    plan = quant::make_precision_plan(shape, loaded.recipe.quantization, loaded.recipe.model.dtype);
  } catch (const ConfigError& e) {  // a modules_in_bf16 pattern that matches nothing: name where it was set
    throw located(loaded, e);
  }
  // The checkpoint's headers too (no weights are read): missing tensors, shapes, FP8 tensors.
  int64_t stored_fp8 = 0;
  if (!loaded.recipe.model.path.empty())
    stored_fp8 = quant::check_model_dir(loaded.recipe.model.path, loaded.recipe.quantization);
  std::cout << "# resolved recipe: " << args.recipe << "\n" << recipe::to_yaml(loaded, !args.plain) << std::flush;
  log::info(cat(args.recipe, " is valid (model ", shape.model_type, ", ", shape.num_hidden_layers, " layers)"));
  log::info(plan.summary());
  if (stored_fp8 > 0) log::info(cat(loaded.recipe.model.path, " is pre-quantized: ", stored_fp8, " FP8 tensors used as stored"));
  return kExitOk;
}

int run_train_command(const TrainArgs& args) {
  std::vector<std::string> overrides = args.overrides;
  // --resume is sugar for the checkpoint.* overrides, applied last.
  if (args.resume == "auto") {
    overrides.push_back("checkpoint.resume_mode=auto");
  } else if (!args.resume.empty()) {
    overrides.push_back("checkpoint.resume_mode=resume_path");
    overrides.push_back("checkpoint.resume_from_path=" + args.resume);
  }
  if (args.gpus > 0) overrides.push_back("trainer.n_gpus_per_node=" + std::to_string(args.gpus));
  const recipe::LoadedRecipe loaded = recipe::load_recipe(args.recipe, overrides);
  try {
    // Several ranks and no launcher around this process: become the launcher.
    const int64_t ranks = loaded.recipe.trainer.n_gpus_per_node;
    if (ranks > 1 && !trainer::world_env_from_environment()) {
      trainer::check_local_ranks(loaded);
      return launch_local_ranks(static_cast<int>(ranks), args.argv);
    }
    return trainer::run_train(loaded);
  } catch (const ConfigError& e) {
    throw located(loaded, e);
  }
}

int run_sft_command(const SftArgs& args) {
  const recipe::LoadedRecipe loaded = recipe::load_recipe(args.recipe, args.overrides);
  try {
    return trainer::run_sft(loaded);
  } catch (const ConfigError& e) {
    throw located(loaded, e);
  }
}

int run_eval(const EvalArgs& args) {
  if (!args.output.empty()) check_output_file(args.output, "eval: -o");  // before the model is loaded
  const trainer::EvalResult r = trainer::evaluate_checkpoint(args.source, args.overrides);
  std::cout << r.to_json() << "\n";
  if (!args.output.empty()) write_file_atomic(args.output, r.to_json() + "\n");
  return kExitOk;
}

int run_data(const DataArgs& args) {
  if (!trainer::is_task(args.task))
    throw ConfigError("data: unknown task '" + args.task + "' (one of: " + join(trainer::task_names(), ", ") + ")");
  check_output_file(args.output, "data: -o");
  trainer::write_task_jsonl(args.task, args.count, args.seed, args.output);
  return kExitOk;
}

int run_export(const std::string& source, const std::string& out, bool fp8) {
  {  // the export directory replaces an earlier export there, never a file or a special file
    std::error_code ec;
    const fs::file_status st = fs::status(out, ec);
    if (fs::exists(st) && !fs::is_directory(st))
      throw ConfigError("export: -o '" + out + "' exists and is not a directory; refusing to replace it");
    const fs::path parent = fs::absolute(out).parent_path();
    if (!fs::is_directory(parent, ec))
      throw ConfigError("export: -o '" + out + "': the directory '" + parent.string() + "' does not exist");
  }
  const std::string ckpt = trainer::export_run(source, out, fp8);
  std::cout << "exported " << ckpt << " to " << out << (fp8 ? " (FP8 projections in HF's FP8 format)" : "") << "\n";
  return kExitOk;
}

int run_init(const InitArgs& args) {
  auto shape = recipe::qwen3_preset(args.preset);
  if (!shape)
    throw ConfigError("init: unknown --preset '" + args.preset + "' (one of: " + join(recipe::qwen3_preset_names(), ", ") + ")");
  const at::Device device = trainer::resolve_device(args.device, "init: --device");  // before --out is created
  // A bad --out is the user's to fix (exit 2): a file in the way, or a model already there.
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(args.out, ec);
  if (std::filesystem::exists(st)) {
    if (!std::filesystem::is_directory(st))
      throw ConfigError("init: --out '" + args.out + "' exists and is not a directory");
    for (const char* f : {"config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json"})
      if (std::filesystem::exists(std::filesystem::path(args.out) / f, ec))
        throw ConfigError("init: --out '" + args.out + "' already holds a model (" + f +
                          "); remove it or choose another directory");
  }
  std::filesystem::create_directories(args.out, ec);
  if (ec) throw ConfigError("init: cannot create --out '" + args.out + "': " + ec.message());
  if (::access(args.out.c_str(), W_OK | X_OK) != 0)
    throw ConfigError("init: --out '" + args.out + "' is not writable: " + std::strerror(errno));
  if (args.fp8)
    quant::write_random_fp8_checkpoint(args.out, args.arch, *shape, args.seed, device);
  else
    model::write_random_checkpoint(args.out, args.arch, *shape, args.seed, device);
  log::info(cat("wrote a random ", args.arch, args.fp8 ? " FP8" : "", " checkpoint (preset ", args.preset, ", seed ",
                args.seed, ", drawn on ", args.device, ") to ", args.out));
  return kExitOk;
}

int run_bench_gemm(const BenchGemmArgs& args) {
  if (!args.output.empty()) check_output_file(args.output, "bench gemm: -o");
  GemmBenchOptions o;
  o.models = args.models;
  o.ms = args.ms;
  o.reps = args.reps;
  o.backward = !args.no_backward;
  const std::string report = run_gemm_bench(o);
  std::cout << report << std::flush;
  if (!args.output.empty()) write_file_atomic(args.output, report);
  return kExitOk;
}

int run_bench_forward(const BenchForwardArgs& args) {
  if (!args.output.empty()) check_output_file(args.output, "bench forward: -o");
  const std::string report = run_forward_bench(args.options);
  std::cout << report << std::flush;
  if (!args.output.empty()) write_file_atomic(args.output, report);
  return kExitOk;
}

int run_bench_rollout(const BenchRolloutArgs& args) {
  if (!args.output.empty()) check_output_file(args.output, "bench rollout: -o");
  const std::string report = run_rollout_bench(args.options);
  std::cout << report << std::flush;
  if (!args.output.empty()) write_file_atomic(args.output, report);
  return kExitOk;
}

}  // namespace fp8rl
