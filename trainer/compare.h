// `fp8rl compare RUN_DIR...`: several runs of one recipe family side by side (the FP8 recipe and
// its BF16 baseline, seeds, TIS on/off), from what each run directory holds: metrics.jsonl and
// resolved_recipe.yaml. This is the terminal summary; the HTML report with plots is still to
// come (issue 12).
//
// What it prints: each run with its step count (and "in progress" when it has no final
// checkpoint yet), the recipe keys whose values differ between the runs (only those), and a table
// of metrics -- the mean over each run's last `window` steps (accuracy, reward, response length,
// mismatch KL, IS weights and ESS, step/phase times, tokens/s, peak memory) -- with each run's
// ratio to the first. Runs of different lengths are compared over their own last steps.
// A malformed metrics line (a torn last line of a run in progress) is skipped with a warning
// naming file:line; a run without metrics is listed as such; neither stops the comparison.
#pragma once

#include <string>
#include <vector>

namespace fp8rl::trainer {

struct CompareOptions {
  std::vector<std::string> runs;  // run directories
  int64_t window = 10;            // last steps averaged
};

// The summary as text. ConfigError when a path is not a run directory (no resolved_recipe.yaml).
std::string compare_runs(const CompareOptions& options);

}  // namespace fp8rl::trainer
