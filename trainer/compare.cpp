#include "trainer/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/util/atomic_file.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "trainer/compare_report.h"
#include "trainer/run_history.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;

namespace {

std::string fmt_value(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, std::fabs(v) >= 1000 || (std::fabs(v) < 1e-3 && v != 0) ? "%.3g" : "%.4g", v);
  return buf;
}

std::string pad(const std::string& s, size_t w) { return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' '); }

std::string recipe_value(const RunHistory& r, const std::string& key) {
  const auto it = r.recipe.find(key);
  return it == r.recipe.end() ? "-" : it->second;
}

}  // namespace

const std::vector<std::string>& summary_metrics() {
  static const std::vector<std::string> keys = {
      "score/accuracy", "val/accuracy", "eval:val/accuracy", "reward/mean", "response_length/mean", "actor/entropy",
      "rollout_corr/kl", "rollout_corr/k3_kl", "rollout_corr/rollout_is_mean", "rollout_corr/rollout_is_eff_sample_size",
      "rollout_corr/token_mult_prob_error", "timing_s/step", "timing_s/rollout", "timing_s/old_log_prob",
      "timing_s/update", "perf/rollout_tokens_per_s", "memory/rollout_peak_gib", "memory/old_log_prob_peak_gib",
      "memory/update_peak_gib"};
  return keys;
}

std::string run_label(size_t index) {
  std::string s;  // bijective base 26, built least significant letter first
  for (size_t i = index + 1; i > 0; i = (i - 1) / 26) s.push_back(static_cast<char>('A' + (i - 1) % 26));
  return std::string(s.rbegin(), s.rend());
}

std::string group_label(const std::vector<size_t>& indices) {
  std::string s;
  for (size_t i : indices) {
    if (!s.empty()) s += '+';
    s += run_label(i);
  }
  return s;
}

SummaryTables summary_tables(const std::vector<RunHistory>& runs, int64_t window) {
  SummaryTables t;
  for (const std::string& k : summary_metrics()) {
    for (const bool last : {false, true}) {
      SummaryTables::Row row{k, {}, {}};
      for (const RunHistory& r : runs) row.values.push_back(last ? final_value(r, k) : summary_value(r, k, window));
      if (std::all_of(row.values.begin(), row.values.end(), [](double x) { return std::isnan(x); })) continue;
      const double a = row.values.front();
      for (size_t i = 1; i < row.values.size(); ++i)
        row.ratios.push_back(std::isnan(row.values[i]) || std::isnan(a) || a == 0 ? std::nan("") : row.values[i] / a);
      (last ? t.finals : t.means).push_back(std::move(row));
    }
  }
  t.groups = group_by_configuration(runs);
  if (std::none_of(t.groups.begin(), t.groups.end(), [](const auto& g) { return g.size() > 1; })) return t;
  for (const std::string& k : summary_metrics()) {
    SummaryTables::SeedRow row{k, {}};
    for (const auto& g : t.groups) row.stats.push_back(seed_mean_spread(runs, g, k, window));
    if (std::any_of(row.stats.begin(), row.stats.end(), [](const MeanSpread& m) { return m.n > 0; }))
      t.across_seeds.push_back(std::move(row));
  }
  return t;
}

std::string compare_runs(const CompareOptions& o) {
  if (o.runs.empty()) throw ConfigError("compare: give at least one run directory");
  if (!o.html_output.empty()) check_output_file(o.html_output, "compare: -o");  // before any reading
  std::vector<RunHistory> runs;
  for (const std::string& d : o.runs) runs.push_back(read_run_history(d));
  std::string out;
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunHistory& r = runs[i];
    out += cat(run_label(i), " = ", r.dir, ": ", r.last_step, " steps",
               r.finished() ? "" : cat(" of ", r.total_steps, " (in progress or stopped)"), "\n");
  }
  const std::vector<std::string> diff = differing_recipe_keys(runs);
  if (diff.empty()) out += "recipes: identical\n";
  else out += "recipe differences:\n";
  for (const std::string& key : diff) {
    out += "  " + pad(key, 36);
    for (size_t i = 0; i < runs.size(); ++i) out += cat(i ? " | " : "", recipe_value(runs[i], key));
    out += "\n";
  }

  const SummaryTables t = summary_tables(runs, o.window);
  for (const bool last : {false, true}) {
    out += cat("\n", pad(last ? std::string("final (last logged value)") : cat("mean of the last ", o.window, " steps"), 42));
    for (size_t i = 0; i < runs.size(); ++i) out += pad(run_label(i), 11);
    for (size_t i = 1; i < runs.size(); ++i) out += pad(run_label(i) + "/A", 10);
    out += "\n";
    for (const SummaryTables::Row& row : last ? t.finals : t.means) {
      out += pad(row.metric, 42);
      for (double x : row.values) out += pad(fmt_value(x), 11);
      for (double r : row.ratios) out += pad(std::isnan(r) ? "-" : fmt_value(r) + "x", 10);
      out += "\n";
    }
  }
  // Configurations run with several seeds: mean +- sample standard deviation of the run means.
  if (!t.across_seeds.empty()) {
    out += cat("\nacross seeds (last ", o.window, " steps; mean +- std over runs)\n", pad("", 42));
    for (const auto& g : t.groups) out += pad(group_label(g), 22);
    out += "\n";
    for (const SummaryTables::SeedRow& row : t.across_seeds) {
      out += pad(row.metric, 42);
      for (const MeanSpread& m : row.stats)
        out += pad(m.n == 0 ? "-" : m.n == 1 ? fmt_value(m.mean) : fmt_value(m.mean) + " +- " + fmt_value(m.spread), 22);
      out += "\n";
    }
  }

  if (!o.html_output.empty()) {
    ReportOptions ro;
    ro.window = o.window;
    ro.smooth = o.smooth;
    write_file_atomic(o.html_output, render_compare_report(runs, t, ro));
    out += cat("\nreport: ", o.html_output, "\n");
  }
  return out;
}

}  // namespace fp8rl::trainer
