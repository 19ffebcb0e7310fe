#include "trainer/run_history.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/recipe/load.h"
#include "core/recipe/run_dir.h"
#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The run's name and place: they always differ and say nothing about the configuration.
bool is_identity_key(const std::string& key) {
  return key == "trainer.output_dir" || key == "trainer.experiment_name" || key == "checkpoint.resume_from_path";
}
bool is_seed_key(const std::string& key) { return key == "trainer.seed" || key == "data.seed"; }

}  // namespace

RunHistory read_run_history(const std::string& dir) {
  RunHistory run;
  run.dir = dir;
  const fs::path recipe_path = fs::path(dir) / recipe::kResolvedRecipeFile;
  if (!fs::is_regular_file(recipe_path))
    throw ConfigError(cat("compare: '", dir, "' is not a run directory (no ", recipe::kResolvedRecipeFile, ")"));
  const recipe::LoadedRecipe loaded = recipe::load_recipe(recipe_path.string());
  run.recipe = recipe::key_values(loaded.recipe);
  run.total_steps = loaded.recipe.trainer.total_training_steps;
  if (std::ifstream ev(fs::path(dir) / "eval.json"); ev) {
    std::string text((std::istreambuf_iterator<char>(ev)), std::istreambuf_iterator<char>());
    const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) {
      for (const auto& [key, value] : j.items())
        if (value.is_number()) run.eval[key] = value.get<double>();
    } else {
      log::warn(cat("compare: ", (fs::path(dir) / "eval.json").string(), ": not a JSON object; ignored"));
    }
  }
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
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer() || j["step"].get<int64_t>() < 0) {
      log::warn(cat("compare: ", metrics.string(), ":", line_no, ": not a metrics line (a run still writing?); skipped"));
      continue;
    }
    StepRecord rec;
    rec.step = j["step"].get<int64_t>();
    for (const auto& [key, value] : j.items())
      if (key != "step" && value.is_number()) rec.values[key] = value.get<double>();
    run.last_step = std::max(run.last_step, rec.step);
    run.records.push_back(std::move(rec));
  }
  return run;
}

std::vector<std::pair<double, double>> metric_series(const RunHistory& run, const std::string& key, bool wall_clock) {
  std::vector<std::pair<double, double>> points;
  double seconds = 0;
  for (const StepRecord& r : run.records) {
    if (r.step > 0) {
      const auto t = r.values.find("timing_s/step");
      if (t != r.values.end()) seconds += t->second;
    }
    const auto it = r.values.find(key);
    if (it == r.values.end() || !std::isfinite(it->second)) continue;
    points.emplace_back(wall_clock ? seconds : static_cast<double>(r.step), it->second);
  }
  return points;
}

double tail_mean(const RunHistory& run, const std::string& key, int64_t window) {
  double sum = 0;
  int64_t n = 0;
  for (const StepRecord& r : run.records) {
    if (r.step <= 0 || r.step <= run.last_step - window) continue;
    const auto v = r.values.find(key);
    if (v == r.values.end()) continue;
    sum += v->second;
    ++n;
  }
  return n ? sum / static_cast<double>(n) : std::nan("");
}

double summary_value(const RunHistory& run, const std::string& key, int64_t window) {
  if (key.rfind("eval:", 0) == 0) {
    const auto it = run.eval.find(key.substr(5));
    return it == run.eval.end() ? std::nan("") : it->second;
  }
  return tail_mean(run, key, window);
}

double final_value(const RunHistory& run, const std::string& key) {
  if (key.rfind("eval:", 0) == 0) return summary_value(run, key, 0);
  for (auto it = run.records.rbegin(); it != run.records.rend(); ++it) {
    if (it->step <= 0) continue;
    const auto v = it->values.find(key);
    if (v != it->values.end()) return v->second;
  }
  return std::nan("");
}

double run_mean(const RunHistory& run, const std::string& key) {
  return tail_mean(run, key, run.last_step);
}

std::vector<std::string> differing_recipe_keys(const std::vector<RunHistory>& runs) {
  std::set<std::string> keys;
  for (const RunHistory& r : runs)
    for (const auto& kv : r.recipe) keys.insert(kv.first);
  std::vector<std::string> out;
  for (const std::string& key : keys) {
    if (is_identity_key(key)) continue;
    const auto value = [&](const RunHistory& r) {
      const auto it = r.recipe.find(key);
      return it == r.recipe.end() ? std::string("\x01missing") : it->second;
    };
    if (std::any_of(runs.begin(), runs.end(), [&](const RunHistory& r) { return value(r) != value(runs.front()); }))
      out.push_back(key);
  }
  return out;
}

std::vector<std::vector<size_t>> group_by_configuration(const std::vector<RunHistory>& runs) {
  const auto configuration = [](const RunHistory& r) {
    std::map<std::string, std::string> c;
    for (const auto& [k, v] : r.recipe)
      if (!is_identity_key(k) && !is_seed_key(k)) c[k] = v;
    return c;
  };
  std::vector<std::vector<size_t>> groups;
  std::vector<std::map<std::string, std::string>> seen;
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto c = configuration(runs[i]);
    const auto it = std::find(seen.begin(), seen.end(), c);
    if (it == seen.end()) {
      seen.push_back(c);
      groups.push_back({i});
    } else {
      groups[static_cast<size_t>(it - seen.begin())].push_back(i);
    }
  }
  return groups;
}

MeanSpread mean_spread(const std::vector<double>& values) {
  MeanSpread m;
  double sum = 0;
  for (double v : values)
    if (!std::isnan(v)) {
      sum += v;
      ++m.n;
    }
  if (m.n == 0) return {std::nan(""), std::nan(""), 0};
  m.mean = sum / static_cast<double>(m.n);
  double ss = 0;
  for (double v : values)
    if (!std::isnan(v)) ss += (v - m.mean) * (v - m.mean);
  m.spread = m.n > 1 ? std::sqrt(ss / static_cast<double>(m.n - 1)) : 0.0;
  return m;
}

MeanSpread seed_mean_spread(const std::vector<RunHistory>& runs, const std::vector<size_t>& group, const std::string& key,
                            int64_t window) {
  std::vector<double> v;
  for (size_t i : group) v.push_back(summary_value(runs.at(i), key, window));
  return mean_spread(v);
}

}  // namespace fp8rl::trainer
