#include "trainer/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/recipe/load.h"
#include "core/recipe/run_dir.h"
#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Run {
  std::string dir;
  std::map<std::string, std::string> recipe;
  std::vector<json> steps;  // metrics lines with a step > 0 (step 0: validation before training)
  bool finished = false;
  int64_t total_steps = 0;
};

Run read_run(const std::string& dir) {
  Run run;
  run.dir = dir;
  const fs::path recipe_path = fs::path(dir) / recipe::kResolvedRecipeFile;
  if (!fs::is_regular_file(recipe_path))
    throw ConfigError(cat("compare: '", dir, "' is not a run directory (no ", recipe::kResolvedRecipeFile, ")"));
  const recipe::LoadedRecipe loaded = recipe::load_recipe(recipe_path.string());
  run.recipe = recipe::key_values(loaded.recipe);
  run.total_steps = loaded.recipe.trainer.total_training_steps;
  const fs::path metrics = fs::path(dir) / recipe::kMetricsFile;
  std::ifstream in(metrics);
  if (!in) {
    log::warn(cat("compare: ", metrics.string(), ": no metrics yet"));
    return run;
  }
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
      log::warn(cat("compare: ", metrics.string(), ":", line_no, ": not a metrics line (a run still writing?); skipped"));
      continue;
    }
    if (j["step"].get<int64_t>() > 0) run.steps.push_back(std::move(j));
  }
  run.finished = !run.steps.empty() && run.steps.back()["step"].get<int64_t>() >= run.total_steps;
  return run;
}

// Mean of `key` over the last `window` steps that have it; NaN when none does.
double tail_mean(const Run& run, const std::string& key, int64_t window) {
  double sum = 0;
  int64_t n = 0;
  for (auto it = run.steps.rbegin(); it != run.steps.rend() && n < window; ++it)
    if (it->contains(key) && (*it)[key].is_number()) {
      sum += (*it)[key].get<double>();
      ++n;
    }
  return n ? sum / static_cast<double>(n) : std::nan("");
}

std::string fmt_value(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, std::fabs(v) >= 1000 || (std::fabs(v) < 1e-3 && v != 0) ? "%.3g" : "%.4g", v);
  return buf;
}

std::string pad(const std::string& s, size_t w) { return s.size() >= w ? s : s + std::string(w - s.size(), ' '); }

}  // namespace

std::string compare_runs(const CompareOptions& o) {
  if (o.runs.empty()) throw ConfigError("compare: give at least one run directory");
  std::vector<Run> runs;
  for (const std::string& d : o.runs) runs.push_back(read_run(d));
  std::string out;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    out += cat(static_cast<char>('A' + i % 26), " = ", r.dir, ": ", r.steps.size(), " steps",
               r.finished ? "" : cat(" of ", r.total_steps, " (in progress or stopped)"), "\n");
  }
  // Recipe keys that differ (the run directory itself always does: left out).
  std::string diffs;
  for (const auto& [key, value] : runs.front().recipe) {
    if (key == "trainer.output_dir" || key == "trainer.experiment_name") continue;
    bool differ = false;
    for (const Run& r : runs) differ = differ || (r.recipe.count(key) ? r.recipe.at(key) : "") != value;
    if (!differ) continue;
    diffs += "  " + pad(key, 36);
    for (size_t i = 0; i < runs.size(); ++i) diffs += cat(i ? " | " : "", runs[i].recipe.count(key) ? runs[i].recipe.at(key) : "-");
    diffs += "\n";
  }
  out += diffs.empty() ? "recipes: identical\n" : "recipe differences:\n" + diffs;
  static const std::vector<std::string> keys = {
      "score/accuracy", "val/accuracy", "reward/mean", "response_length/mean", "actor/entropy",
      "rollout_corr/kl", "rollout_corr/k3_kl", "rollout_corr/rollout_is_mean", "rollout_corr/rollout_is_eff_sample_size",
      "rollout_corr/token_mult_prob_error", "timing_s/step", "timing_s/rollout", "timing_s/old_log_prob",
      "timing_s/update", "perf/rollout_tokens_per_s", "memory/rollout_peak_gib", "memory/update_peak_gib"};
  out += cat("\n", pad(cat("mean of the last ", o.window, " steps"), 42));
  for (size_t i = 0; i < runs.size(); ++i) out += pad(std::string(1, static_cast<char>('A' + i % 26)), 12);
  for (size_t i = 1; i < runs.size(); ++i) out += pad(cat(static_cast<char>('A' + i % 26), "/A"), 9);
  out += "\n";
  for (const std::string& k : keys) {
    std::vector<double> v;
    for (const Run& r : runs) v.push_back(tail_mean(r, k, o.window));
    if (std::all_of(v.begin(), v.end(), [](double x) { return std::isnan(x); })) continue;
    out += pad(k, 42);
    for (double x : v) out += pad(fmt_value(x), 12);
    for (size_t i = 1; i < v.size(); ++i)
      out += pad(std::isnan(v[i]) || std::isnan(v[0]) || v[0] == 0 ? "-" : fmt_value(v[i] / v[0]) + "x", 9);
    out += "\n";
  }
  return out;
}

}  // namespace fp8rl::trainer
