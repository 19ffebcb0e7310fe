#include "trainer/export.h"

#include <unistd.h>

#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/hf/safetensors.h"
#include "core/model/architecture.h"
#include "core/model/weight_reader.h"
#include "core/recipe/load.h"
#include "core/util/atomic_file.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "quant/fp8_model.h"
#include "quant/hf_fp8.h"
#include "quant/precision_plan.h"
#include "quant/scaling.h"
#include "trainer/checkpoint_store.h"
#include "trainer/policy.h"
#include "trainer/tensor_file.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;

namespace {

// The directory an export writes, absolute, without a trailing separator ("exported/" as shells
// complete it would otherwise put the temporary directory inside it).
fs::path export_target(const std::string& out_dir) {
  fs::path out = fs::absolute(out_dir).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();
  return out;
}

// An existing directory at the target is replaced only when it holds what an export writes and
// nothing else: `-o runs` (meaning "under runs/") must not delete every run there.
void check_replaceable(const fs::path& out) {
  std::error_code ec;
  if (!fs::is_directory(out, ec)) return;
  static const std::set<std::string> ours{"config.json", "generation_config.json", "tokenizer.json",
                                          "tokenizer_config.json", "model.safetensors", "adapter"};
  for (const fs::directory_entry& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (!ours.count(name))
      throw ConfigError(cat("export: '", out.string(), "' exists and holds '", name,
                            "', which no export writes; refusing to replace it (name a new or an earlier export's directory)"));
  }
}

// config.json + tokenizer files of `source_dir` and `tensors` as model.safetensors, into `out_dir`
// through a temporary directory and a rename. A `quantization_config` is set in the written
// config.json.
void write_hf_dir(const std::map<std::string, at::Tensor>& tensors, const std::string& source_dir,
                  const std::string& out_dir, const std::optional<quant::HfFp8Config>& quantization_config = std::nullopt) {
  const fs::path out = export_target(out_dir);
  check_replaceable(out);
  const fs::path tmp = out.parent_path() / cat(".", out.filename().string(), ".tmp.", ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}) {
    const fs::path src = fs::path(source_dir) / f;
    if (fs::exists(src)) fs::copy_file(src, tmp / f);
  }
  // The source's config.json may carry an FP8 checkpoint's quantization_config: kept for an FP8
  // export (rewritten), dropped for a dense one, whose weights have no scales to go with it.
  if (quantization_config)
    quant::write_hf_fp8_config(tmp.string(), *quantization_config);
  else if (fs::exists(tmp / "config.json"))
    quant::drop_hf_quantization_config(tmp.string());
  save_tensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
  const fs::path old = out.parent_path() / cat(".", out.filename().string(), ".old.", ::getpid());
  if (fs::exists(out)) fs::rename(out, old);
  fs::rename(tmp, out);
  fs::remove_all(old, ec);
}

}  // namespace

void save_dense_model(const model::CausalLM& model, const std::string& source_dir, const std::string& out_dir) {
  std::map<std::string, at::Tensor> tensors;
  model.visit([&](const model::ModelTensor& t) {
    if (t.role == model::TensorRole::buffer) return;
    FP8RL_CHECK(t.role == model::TensorRole::trainable || t.role == model::TensorRole::frozen,
                cat("save_dense_model: ", t.name, " is not a dense tensor"));
    FP8RL_CHECK(t.name.find("lora_") == std::string::npos, cat("save_dense_model: adapters are not merged: ", t.name));
    model::for_each_hf_tensor(t, [&](const std::string& name, const at::Tensor& x) { tensors[name] = x; });
  });
  write_hf_dir(tensors, source_dir, out_dir);
}

// The projections `plan` marks FP8, quantized in `tensors` to HF's FP8 layout (E4M3, 128x128
// block scales as weight_scale_inv); returns the quantization_config naming what stays dense.
// `exact` holds FP32 values of weights that `tensors` has in the model dtype: quantized from
// those, so a weight is rounded once (to FP8), not twice.
quant::HfFp8Config quantize_for_hf(std::map<std::string, at::Tensor>& tensors, const std::map<std::string, at::Tensor>& exact,
                                   const quant::PrecisionPlan& plan, bool pow2) {
  std::vector<std::string> dense = {"lm_head"};
  for (const quant::ModulePlan& m : plan.linears) {
    if (m.precision != quant::Precision::fp8) {
      dense.push_back(m.name);
      continue;
    }
    at::Tensor& w = tensors.at(m.name + ".weight");
    const auto e = exact.find(m.name + ".weight");
    const quant::Fp8Weight q = quant::quantize_weight(e != exact.end() ? e->second : w.to(at::kFloat), quant::WeightScaling::block,
                                                      quant::Fp8Format::e4m3, pow2, m.name + ".weight");
    auto [data, scale_inv] = quant::hf_fp8_pair(q);
    w = data;
    tensors[m.name + ".weight_scale_inv"] = scale_inv;
  }
  quant::HfFp8Config config;  // E4M3, dynamic activations, 128x128 blocks: what was written above
  config.modules_to_not_convert = std::move(dense);
  return config;
}

std::string export_run(const std::string& source, const std::string& out_dir, bool fp8) {
  std::error_code ec;
  check_replaceable(export_target(out_dir));  // before minutes of loading and merging
  // Absolute: the run directory is found two levels up (a relative "step_00000050" has none).
  fs::path ckpt = fs::absolute(source).lexically_normal();
  if (!ckpt.has_filename()) ckpt = ckpt.parent_path();  // "step_00000050/" as shells complete it
  if (!fs::exists(ckpt / kManifestFile)) {
    if (!fs::is_directory(ckpt / "checkpoints", ec))
      throw ConfigError(cat("export: '", source, "' is neither a checkpoint (no ", kManifestFile, ") nor a run directory (no checkpoints/)"));
    std::vector<std::string> skipped;
    const std::optional<fs::path> good = CheckpointStore(ckpt, 0).latest_good(&skipped);
    for (const std::string& s : skipped) log::warn("export: skipping " + s);
    if (!good) throw ConfigError(cat("export: no complete checkpoint in ", (ckpt / "checkpoints").string()));
    ckpt = *good;
  }
  verify_checkpoint(ckpt);
  const fs::path run_dir = ckpt.parent_path().parent_path();
  const recipe::LoadedRecipe loaded = recipe::load_recipe((ckpt / "resolved_recipe.yaml").string());
  const recipe::Recipe& r = loaded.recipe;
  // The model the run started from: its warm-up, its random init, or model.path.
  std::string model_dir = r.model.path;
  if (r.sft.steps > 0) model_dir = (run_dir / "sft_model").string();
  else if (!r.model.init_preset.empty()) model_dir = (run_dir / "init_model").string();
  if (!fs::exists(fs::path(model_dir) / "config.json"))
    throw ConfigError(cat("export: the run's starting model ", model_dir, " is gone; it is needed to merge into"));
  Policy policy(r, model_dir, at::kCPU);
  const std::string tpath = (ckpt / "trainable.safetensors").string();
  const std::map<std::string, at::Tensor> trained = load_tensors(tpath);
  const at::ScalarType dtype = resolve_dtype(r.model.dtype);

  // Every HF tensor of the starting checkpoint, in the model dtype (an HF FP8 checkpoint's
  // weights dequantized with their block scales)...
  const safetensors::Checkpoint base(model_dir);
  std::map<std::string, at::Tensor> out;
  std::map<std::string, at::Tensor> exact;  // FP32 values of weights computed here (masters, merges, dequantized)
  const std::string kScaleInv = ".weight_scale_inv";
  for (const std::string& name : base.names()) {
    if (name.size() > kScaleInv.size() && name.compare(name.size() - kScaleInv.size(), kScaleInv.size(), kScaleInv) == 0)
      continue;  // read with its weight below
    const std::string module = name.size() > 7 ? name.substr(0, name.size() - 7) : "";  // "<module>.weight"
    if (base.get(name).dtype == safetensors::Dtype::F8_E4M3 && base.contains(module + kScaleInv)) {
      exact[name] = quant::dequantize(quant::load_hf_fp8_weight(base, module, at::kCPU));
      out[name] = exact[name].to(dtype);
      continue;
    }
    out[name] = model::to_host_tensor(base.get(name)).to(dtype);
  }
  // ...with the trained values put in.
  const double scaling = r.lora.rank > 0 ? r.lora.alpha / static_cast<double>(r.lora.rank) : 0.0;
  std::map<std::string, at::Tensor> adapter;
  for (const model::ModelTensor& t : policy.trainable()) {
    const auto it = trained.find(t.name);
    if (it == trained.end()) throw ConfigError(cat(tpath, ": tensor '", t.name, "' is missing"));
    const at::Tensor value = it->second.to(at::kFloat);
    if (r.lora.rank > 0) {  // `<part>.lora_A.weight` / `.lora_B.weight`: merged once both are seen
      adapter["base_model.model." + t.name] = value;
      continue;
    }
    const std::string master = ".master_weight";
    if (t.name.size() > master.size() && t.name.compare(t.name.size() - master.size(), master.size(), master) == 0) {
      FP8RL_CHECK(t.projection != nullptr, "export: a master weight without its projection spec");
      int64_t row = 0;  // a fused master holds its parts along dim 0
      for (size_t i = 0; i < t.projection->parts.size(); ++i) {
        const std::string name = t.projection->parts[i] + ".weight";
        exact[name] = value.narrow(0, row, t.projection->part_out[i]);
        out[name] = exact[name].to(dtype);
        row += t.projection->part_out[i];
      }
      continue;
    }
    model::ModelTensor v = t;
    v.tensor = value;
    model::for_each_hf_tensor(v, [&](const std::string& name, const at::Tensor& x) { out[name] = x.to(dtype); });
  }
  if (r.lora.rank > 0) {
    for (const auto& [name, a] : adapter) {
      const std::string suffix = ".lora_A.weight";
      if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
      const std::string stem = name.substr(0, name.size() - suffix.size());     // base_model.model.<part>
      const std::string part = stem.substr(std::string("base_model.model.").size());
      const at::Tensor& b = adapter.at(stem + ".lora_B.weight");
      const std::string wname = part + ".weight";
      const at::Tensor w0 = exact.count(wname) ? exact.at(wname) : out.at(wname).to(at::kFloat);
      exact[wname] = w0 + scaling * at::matmul(b, a);
      out.at(wname) = exact[wname].to(dtype);
    }
  }
  std::optional<quant::HfFp8Config> quantization_config;
  if (fp8) {  // the run's precision plan (its BF16 layers and modules stay dense), HF's block format
    recipe::QuantizationConfig q = r.quantization;
    q.quant_method = "fp8";
    const quant::PrecisionPlan plan =
        quant::make_model_precision_plan(model_dir, policy.model().config().shape, q, r.model.dtype);
    if (q.weight_scaling != "block" || q.fmt != "e4m3")
      log::info(cat("export: the run used ", q.fmt, " with ", q.weight_scaling, " scales; HF's FP8 format is e4m3 with "
                    "128x128 blocks, so the weights are quantized that way"));
    quantization_config = quantize_for_hf(out, exact, plan, q.use_weight_pow2_scale);
    log::info("export: " + plan.summary());
  }
  write_hf_dir(out, model_dir, out_dir, quantization_config);
  if (r.lora.rank > 0) {
    const fs::path adir = fs::path(out_dir) / "adapter";
    fs::create_directories(adir);
    save_tensors((adir / "adapter_model.safetensors").string(), adapter, {{"format", "pt"}});
    const nlohmann::json config = {{"peft_type", "LORA"},
                                   {"task_type", "CAUSAL_LM"},
                                   {"r", r.lora.rank},
                                   {"lora_alpha", r.lora.alpha},
                                   {"lora_dropout", r.lora.dropout},
                                   {"bias", "none"},
                                   {"target_modules", r.lora.target_modules == std::vector<std::string>{"all-linear"}
                                                          ? nlohmann::json("all-linear")
                                                          : nlohmann::json(r.lora.target_modules)},
                                   {"base_model_name_or_path", fs::absolute(model_dir).string()}};
    write_file_atomic(adir / "adapter_config.json", config.dump(2) + "\n");
  }
  return ckpt.string();
}

}  // namespace fp8rl::trainer
