#include "trainer/run_state.h"

#include <ATen/core/grad_mode.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/recipe/run_dir.h"
#include "core/util/atomic_file.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "trainer/tensor_file.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kTrainable = "trainable.safetensors";
constexpr const char* kOptimizer = "optimizer.safetensors";
constexpr const char* kState = "trainer_state.json";

// The data order where the run stopped. The permutation of an epoch depends on the number of
// examples: with other training files the rest of the epoch would silently repeat some prompts
// and skip others, so a different count is refused (checkpoints from before the count was saved
// are taken as they are).
void restore_data_order(const json& state, const fs::path& file, DataOrder& order) {
  int64_t epoch = -1, cursor = -1;
  try {
    epoch = state.at("data_epoch").get<int64_t>();
    cursor = state.at("data_cursor").get<int64_t>();
    if (state.contains("data_examples") && state.at("data_examples").get<int64_t>() != order.size())
      throw ConfigError(cat(file.string(), ": the run drew from ", state.at("data_examples").get<int64_t>(),
                            " training prompts, the recipe's data (data.train_files or data.synthetic_num_prompts) now gives ", order.size(),
                            "; its data order cannot go on where it stopped (restore those files, or start a new run)"));
  } catch (const json::exception& e) {
    throw ConfigError(cat(file.string(), ": data_epoch, data_cursor and data_examples must be integers (", e.what(), ")"));
  }
  if (epoch < 0 || cursor < 0 || cursor > order.size())
    throw ConfigError(cat(file.string(), ": data position epoch ", epoch, ", cursor ", cursor, " is out of range for ",
                          order.size(), " training prompts"));
  order.restore(epoch, cursor);
}

}  // namespace

fs::path save_run_checkpoint(const CheckpointStore& store, int64_t step, const Policy& policy, const AdamW& optimizer,
                             const DataOrder& order, const fs::path& run_dir) {
  const fs::path staging = store.begin(step);
  std::map<std::string, at::Tensor> trainable;
  for (const model::ModelTensor& t : policy.trainable()) trainable[t.name] = t.tensor;
  save_tensors((staging / kTrainable).string(), trainable);
  save_tensors((staging / kOptimizer).string(), optimizer.state_tensors());
  const json state = {{"step", step},
                      {"data_epoch", order.epoch()},
                      {"data_cursor", order.cursor()},
                      {"data_examples", order.size()},
                      {"lora", policy.lora()},
                      {"optimizer_steps", optimizer.steps()}};
  write_file_atomic(staging / kState, state.dump(2) + "\n");
  for (const char* f : {recipe::kResolvedRecipeFile, recipe::kMetricsFile}) {
    std::error_code ec;
    if (fs::exists(run_dir / f)) fs::copy_file(run_dir / f, staging / f, fs::copy_options::overwrite_existing, ec);
    if (ec) throw RuntimeFailure(cat("checkpoint: cannot copy ", (run_dir / f).string(), ": ", ec.message()));
  }
  return store.commit(staging, step);
}

int64_t load_run_checkpoint(const fs::path& dir, Policy& policy, AdamW& optimizer, DataOrder& order) {
  const int64_t step = verify_checkpoint(dir);
  std::ifstream in(dir / kState);
  std::stringstream buf;
  buf << in.rdbuf();
  json state;
  try {
    state = json::parse(buf.str());
  } catch (const json::exception& e) {
    throw ConfigError(cat((dir / kState).string(), ": not valid JSON (", e.what(), ")"));
  }
  if (state.value("lora", false) != policy.lora())
    throw ConfigError(cat(dir.string(), ": the checkpoint was made with ", state.value("lora", false) ? "LoRA" : "full fine-tuning",
                          ", the recipe asks for ", policy.lora() ? "LoRA" : "full fine-tuning"));
  const std::string tpath = (dir / kTrainable).string();
  const std::map<std::string, at::Tensor> saved = load_tensors(tpath);
  {
    // The reverse too: a saved tensor the model does not train (fewer lora.target_modules, a
    // smaller set of trained parameters) would be dropped without a word, and the run would go
    // on without the training it holds.
    std::set<std::string> trained;
    for (const model::ModelTensor& t : policy.trainable()) trained.insert(t.name);
    for (const auto& [name, tensor] : saved)
      if (!trained.count(name))
        throw ConfigError(cat(tpath, ": holds trained tensor '", name, "', which this recipe does not train (",
                              policy.lora() ? "lora.target_modules or lora.rank" : "the trained parameters",
                              " changed?); resume with the recipe the checkpoint was made with"));
    at::NoGradGuard no_grad;
    for (const model::ModelTensor& t : policy.trainable()) {
      const auto it = saved.find(t.name);
      if (it == saved.end()) throw ConfigError(cat(tpath, ": tensor '", t.name, "' is missing; the checkpoint belongs to another model or recipe"));
      if (it->second.sizes() != t.tensor.sizes())
        throw ConfigError(cat(tpath, ": tensor '", t.name, "' has shape ", it->second.sizes(), ", the model has ", t.tensor.sizes()));
      t.tensor.detach().copy_(it->second);
    }
  }
  std::map<std::string, at::Tensor> opt = load_tensors((dir / kOptimizer).string());
  for (auto& [k, v] : opt) v = v.to(policy.model().device());
  optimizer.load_state(opt, (dir / kOptimizer).string());
  restore_data_order(state, dir / kState, order);
  policy.sync_weights();
  return step;
}

}  // namespace fp8rl::trainer
