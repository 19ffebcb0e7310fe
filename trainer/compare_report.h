// The HTML report of `fp8rl compare -o report.html`: one self-contained file (inline SVG and CSS,
// no scripts, nothing fetched) that shows whether runs learn alike and what each costs:
//   - the runs (label, directory, steps, seeds) and the recipe keys that differ between them;
//   - the last-window means side by side with ratios to the first run, and mean +- spread across
//     seeds for configurations run with several;
//   - curves against step: training accuracy and reward (moving average over `smooth` steps),
//     validation accuracy, response length, entropy, the rollout-correction metrics (mismatch KL,
//     IS weight mean, effective sample size), rollout tokens/s; training accuracy against
//     wall-clock (the running sum of timing_s/step);
//   - bars: the mean step time split into phases, and peak memory per phase.
// Runs of one configuration share a colour and differ in dash; a chart no run has data for is
// left out and named in a line under the charts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/compare.h"
#include "trainer/run_history.h"

namespace fp8rl::trainer {

struct ReportOptions {
  int64_t window = 10;  // steps averaged in the summary tables
  int64_t smooth = 1;   // trailing moving average of per-step training curves (1 = raw)
};

// `tables`: summary_tables(runs, options.window) (compare.h), computed once for both outputs.
std::string render_compare_report(const std::vector<RunHistory>& runs, const SummaryTables& tables, const ReportOptions& options);

}  // namespace fp8rl::trainer
