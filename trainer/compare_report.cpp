#include "trainer/compare_report.h"

#include <algorithm>
#include <cmath>

#include "core/util/log.h"
#include "trainer/compare.h"
#include "trainer/svg_chart.h"

namespace fp8rl::trainer {

namespace {

// One colour per configuration, one dash per seed within it.
const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
const char* const kDashes[] = {"", "6 3", "2 2", "9 3 2 3"};

struct Style {
  std::string color, dash;
};

// Trailing moving average over `k` points; the number of points is unchanged.
std::vector<std::pair<double, double>> smoothed(std::vector<std::pair<double, double>> p, int64_t k) {
  if (k <= 1) return p;
  std::vector<std::pair<double, double>> out = p;
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    sum += p[i].second;
    if (i >= static_cast<size_t>(k)) sum -= p[i - static_cast<size_t>(k)].second;
    out[i].second = sum / static_cast<double>(std::min<size_t>(i + 1, static_cast<size_t>(k)));
  }
  return out;
}

std::string cell(double v) { return std::isnan(v) ? "-" : short_number(v); }

std::string swatch(const Style& s) {
  return cat("<svg width=\"26\" height=\"10\"><line x1=\"1\" y1=\"5\" x2=\"25\" y2=\"5\" stroke=\"", s.color,
             "\" stroke-width=\"3\"", s.dash.empty() ? "" : cat(" stroke-dasharray=\"", s.dash, "\""), "/></svg>");
}

// Mean per step > 0 of `key`, counting steps that lack it as 0 (a phase that ran on some steps:
// validation, or the update on a step whose groups were all filtered out).
double per_step_mean(const RunHistory& r, const std::string& key) {
  double sum = 0;
  int64_t steps = 0;
  for (const StepRecord& s : r.records) {
    if (s.step <= 0) continue;
    ++steps;
    const auto it = s.values.find(key);
    if (it != s.values.end()) sum += it->second;
  }
  return steps ? sum / static_cast<double>(steps) : std::nan("");
}

const char* const kCss = R"(
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 8px; border: 1px solid #ddd; text-align: right; }
th { background: #f4f4f4; } td.key, th.key, td.text { text-align: left; font-family: monospace; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
figure.chart { margin: 0; width: 640px; box-sizing: border-box; border: 1px solid #e4e4e4; padding: 6px; }
figcaption { font-weight: 600; } figcaption small { font-weight: normal; color: #666; }
svg.plot, svg.bars { width: 100%; height: auto; } .frame { fill: none; stroke: #999; }
.grid { stroke: #eee; } .tick, .axis, .empty { font-size: 11px; fill: #555; }
.legend { font-size: 12px; } .legend span { margin-right: 12px; white-space: nowrap; }
.legend svg { vertical-align: middle; margin-right: 3px; } .note { color: #666; }
)";

}  // namespace

std::string render_compare_report(const std::vector<RunHistory>& runs, const SummaryTables& tables, const ReportOptions& o) {
  const std::vector<std::vector<size_t>>& groups = tables.groups;
  std::vector<Style> style(runs.size());
  std::vector<size_t> group_of(runs.size());
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t k = 0; k < groups[g].size(); ++k) {
      style[groups[g][k]] = {kPalette[g % std::size(kPalette)], kDashes[k % std::size(kDashes)]};
      group_of[groups[g][k]] = g;
    }
  std::string h = cat("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>fp8rl compare: ", runs.size(),
                      " runs</title><style>", kCss, "</style></head><body>\n<h1>fp8rl compare: ", runs.size(), " runs</h1>\n");

  // Runs.
  h += "<h2 id=\"runs\">Runs</h2><table class=\"runs\"><tr><th>run</th><th class=\"key\">directory</th><th>steps</th>"
       "<th>configuration</th><th>trainer.seed</th><th>data.seed</th></tr>\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunHistory& r = runs[i];
    const auto seed = [&](const char* k) { return r.recipe.count(k) ? r.recipe.at(k) : std::string("-"); };
    h += cat("<tr><td>", swatch(style[i]), " ", run_label(i), "</td><td class=\"text\">", html_escape(r.dir), "</td><td>",
             r.last_step, " of ", r.total_steps, r.finished() ? "" : " (in progress or stopped)", "</td><td>",
             group_of[i] + 1, "</td><td>", html_escape(seed("trainer.seed")), "</td><td>", html_escape(seed("data.seed")),
             "</td></tr>\n");
  }
  h += "</table>\n";

  // Recipe differences.
  const std::vector<std::string> diff = differing_recipe_keys(runs);
  h += "<h2 id=\"recipe\">Recipe differences</h2>";
  if (diff.empty()) {
    h += "<p>The recipes are identical.</p>\n";
  } else {
    h += "<table class=\"diff\"><tr><th class=\"key\">key</th>";
    for (size_t i = 0; i < runs.size(); ++i) h += cat("<th>", run_label(i), "</th>");
    h += "</tr>\n";
    for (const std::string& k : diff) {
      h += cat("<tr><td class=\"key\">", html_escape(k), "</td>");
      for (const RunHistory& r : runs) h += cat("<td class=\"text\">", html_escape(r.recipe.count(k) ? r.recipe.at(k) : "-"), "</td>");
      h += "</tr>\n";
    }
    h += "</table>\n";
  }

  // Summary: last-window means, then final (last logged) values, with ratios to run A.
  for (const bool last : {false, true}) {
    h += last ? std::string("<h2 id=\"final\">Final values (last logged)</h2><table class=\"summary\">")
              : cat("<h2 id=\"summary\">Mean of the last ", o.window, " steps</h2><table class=\"summary\">");
    h += "<tr><th class=\"key\">metric</th>";
    for (size_t i = 0; i < runs.size(); ++i) h += cat("<th>", run_label(i), "</th>");
    for (size_t i = 1; i < runs.size(); ++i) h += cat("<th>", run_label(i), "/A</th>");
    h += "</tr>\n";
    for (const SummaryTables::Row& row : last ? tables.finals : tables.means) {
      h += cat("<tr><td class=\"key\">", html_escape(row.metric), "</td>");
      for (double x : row.values) h += cat("<td>", cell(x), "</td>");
      for (double r : row.ratios) h += cat("<td>", std::isnan(r) ? "-" : short_number(r) + "x", "</td>");
      h += "</tr>\n";
    }
    h += "</table>\n";
  }

  // Across seeds.
  if (!tables.across_seeds.empty()) {
    h += cat("<h2 id=\"seeds\">Across seeds</h2><p class=\"note\">Mean &plusmn; sample standard deviation over the runs of each "
             "configuration of their last-", o.window, "-step means.</p><table class=\"seeds\"><tr><th class=\"key\">metric</th>");
    for (size_t g = 0; g < groups.size(); ++g)
      h += cat("<th>", swatch({kPalette[g % std::size(kPalette)], ""}), " ", group_label(groups[g]), "</th>");
    h += "</tr>\n";
    for (const SummaryTables::SeedRow& row : tables.across_seeds) {
      h += cat("<tr><td class=\"key\">", html_escape(row.metric), "</td>");
      for (const MeanSpread& m : row.stats)
        h += cat("<td>", m.n == 0 ? "-" : m.n == 1 ? short_number(m.mean) : short_number(m.mean) + " &plusmn; " + short_number(m.spread),
                 "</td>");
      h += "</tr>\n";
    }
    h += "</table>\n";
  }

  // Curves.
  std::vector<std::string> absent;
  const auto line = [&](const std::string& key, const std::string& title, bool per_step, bool wall_clock = false) {
    LineChart c;
    c.metric = wall_clock ? key + "@time" : key;
    c.title = title;
    c.x_label = wall_clock ? "training time (s)" : "step";
    if (per_step && o.smooth > 1) c.note = cat("moving average over ", o.smooth, " steps");
    size_t n = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      std::vector<std::pair<double, double>> p = metric_series(runs[i], key, wall_clock);
      if (per_step) p.erase(std::remove_if(p.begin(), p.end(), [&](const auto& q) { return !wall_clock && q.first <= 0; }), p.end());
      n += p.size();
      c.series.push_back({run_label(i), cat(run_label(i), ": ", runs[i].dir), style[i].color, style[i].dash,
                          per_step ? smoothed(std::move(p), o.smooth) : std::move(p)});
    }
    if (n == 0) {
      absent.push_back(c.metric);
      return std::string();
    }
    return render_line_chart(c);
  };
  h += "<h2 id=\"learning\">Learning</h2><div class=\"charts\">\n";
  h += line("score/accuracy", "training accuracy (rollouts)", true);
  h += line("val/accuracy", "validation accuracy", false);
  h += line("score/accuracy", "training accuracy against wall-clock", true, true);
  h += line("val/accuracy", "validation accuracy against wall-clock", false, true);
  h += line("reward/mean", "reward", true);
  h += line("reward/mean", "reward against wall-clock", true, true);
  h += "</div>\n<h2 id=\"responses\">Responses</h2><div class=\"charts\">\n";
  h += line("response_length/mean", "response length (tokens)", true);
  h += line("actor/entropy", "entropy", true);
  h += "</div>\n<h2 id=\"correction\">Rollout correction</h2><div class=\"charts\">\n";
  h += line("rollout_corr/kl", "mismatch KL (rollout vs trainer log-probs)", true);
  h += line("rollout_corr/rollout_is_mean", "importance-sampling weight, mean", true);
  h += line("rollout_corr/rollout_is_eff_sample_size", "effective sample size (fraction)", true);
  h += "</div>\n<h2 id=\"speed\">Speed and memory</h2><div class=\"charts\">\n";
  h += line("perf/rollout_tokens_per_s", "rollout generated tokens/s", true);

  // Step time split into phases, per run (mean per step).
  static const std::vector<std::pair<std::string, std::string>> kPhases = {
      {"rollout", "#4e79a7"}, {"reward", "#76b7b2"}, {"old_log_prob", "#f28e2b"},
      {"update", "#e15759"},  {"validation", "#59a14f"}};
  BarChart t;
  t.metric = "timing_s";
  t.title = "mean step time by phase (s)";
  t.x_label = "seconds per step";
  bool any_time = false;
  for (size_t i = 0; i < runs.size(); ++i) {
    BarRow row{run_label(i), {}};
    double parts = 0;
    for (const auto& [phase, color] : kPhases) {
      const double v = per_step_mean(runs[i], "timing_s/" + phase);
      if (std::isnan(v)) continue;
      row.segments.push_back({phase, color, v});
      parts += v;
    }
    const double step = per_step_mean(runs[i], "timing_s/step");
    if (!std::isnan(step)) {
      row.segments.push_back({"other", "#bab0ac", std::max(0.0, step - parts)});
      any_time = true;
    }
    t.rows.push_back(std::move(row));
  }
  if (any_time) h += render_bar_chart(t);
  else absent.push_back(t.metric);

  BarChart m;
  m.metric = "memory";
  m.title = "peak memory by phase (GiB; mean over steps)";
  m.x_label = "GiB";
  bool any_memory = false;
  for (size_t i = 0; i < runs.size(); ++i)
    for (const auto& [phase, color] : std::vector<std::pair<std::string, std::string>>{
             {"rollout", "#4e79a7"}, {"old_log_prob", "#f28e2b"}, {"update", "#e15759"}}) {
      const double v = run_mean(runs[i], "memory/" + phase + "_peak_gib");
      if (std::isnan(v)) continue;
      m.rows.push_back({cat(run_label(i), " ", phase), {{phase, color, v}}});
      any_memory = true;
    }
  if (any_memory) h += render_bar_chart(m);
  else absent.push_back(m.metric);
  h += "</div>\n";
  if (!absent.empty()) {
    std::string names;
    for (const std::string& a : absent) names += cat(names.empty() ? "" : ", ", a);
    h += cat("<p class=\"note absent\">Not logged by any run (no chart): ", html_escape(names), ".</p>\n");
  }
  h += "</body></html>\n";
  return h;
}

}  // namespace fp8rl::trainer
