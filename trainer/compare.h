// `fp8rl compare RUN_DIR... [--window N] [-o report.html]`: several runs of one recipe family side
// by side (the FP8 recipe and its BF16 baseline, seeds, TIS on/off), from what each run directory
// holds (run_history.h).
//
// The terminal summary: each run with its step count (and "in progress or stopped" when it has
// not reached trainer.total_training_steps), the recipe keys whose values differ (only those), a
// table of metrics -- the mean over each run's last `window` steps -- with each run's ratio to the
// first, and, where several runs share a configuration (recipes equal but for the seeds), their
// mean +- spread across seeds. With `html_output` it also writes the HTML report
// (compare_report.h). Runs of different lengths are compared over their own last steps; a torn
// metrics line or a run without metrics is a warning line, never a stop.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/run_history.h"

namespace fp8rl::trainer {

struct CompareOptions {
  std::vector<std::string> runs;  // run directories; the first is the reference of the ratios
  int64_t window = 10;            // last steps averaged
  std::string html_output;        // write the HTML report here ("" = none)
  int64_t smooth = 1;             // moving-average window of the report's per-step curves
};

// The summary as text; writes the report when asked. ConfigError when a path is not a run
// directory (no resolved_recipe.yaml); RuntimeFailure when the report cannot be written.
std::string compare_runs(const CompareOptions& options);

// The metrics of the summary tables, in order ("eval:val/accuracy": the run's eval.json, its final
// checkpoint scored by the one dense evaluator).
const std::vector<std::string>& summary_metrics();

// The summary tables as numbers, computed once; the terminal and the HTML report render them.
struct SummaryTables {
  struct Row {
    std::string metric;
    std::vector<double> values;  // per run (summary_value); NaN where a run lacks it
    std::vector<double> ratios;  // runs B, C, ... over run A; NaN where undefined
  };
  struct SeedRow {
    std::string metric;
    std::vector<MeanSpread> stats;  // per configuration (groups)
  };
  std::vector<Row> means;                   // the summary metrics some run has
  std::vector<Row> finals;                  // the same metrics' last logged values (final_value)
  std::vector<std::vector<size_t>> groups;  // group_by_configuration
  std::vector<SeedRow> across_seeds;        // empty unless some configuration has several runs
};
SummaryTables summary_tables(const std::vector<RunHistory>& runs, int64_t window);

// A run's short name in tables and plots: A, B, ..., Z, AA, AB, ...
std::string run_label(size_t index);

// Runs of one configuration named together: "A+C+E".
std::string group_label(const std::vector<size_t>& indices);

}  // namespace fp8rl::trainer
