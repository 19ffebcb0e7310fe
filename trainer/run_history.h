// What a finished or running run directory holds, read back for `fp8rl compare`: the resolved
// recipe (as flat key -> value strings) and every metrics line of metrics.jsonl.
//
// A run directory may also hold eval.json, the one-evaluator score of its final checkpoint
// (trainer/evaluate.h); its numeric values are read as they are.
//
// Reading never stops on a run that is still writing or was damaged: a malformed line (a torn
// last line, a stray byte) is skipped with one warning naming file:line, and a run without a
// metrics file is kept with no steps. Only a path that is not a run directory at all (no
// resolved_recipe.yaml) is a ConfigError.
//
// Seeds: runs whose recipes are equal except for the seed keys (trainer.seed, data.seed) and the
// run's own name and place are one "configuration"; compare reports their mean and spread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace fp8rl::trainer {

struct StepRecord {
  int64_t step = 0;                        // 0: validation before training
  std::map<std::string, double> values;    // the line's numeric values
};

struct RunHistory {
  std::string dir;
  std::map<std::string, std::string> recipe;  // recipe::key_values of resolved_recipe.yaml
  std::vector<StepRecord> records;            // in file order
  int64_t total_steps = 0;                    // trainer.total_training_steps
  int64_t last_step = 0;                      // the highest step logged
  std::map<std::string, double> eval;         // <dir>/eval.json (`fp8rl eval RUN -o RUN/eval.json`), if present
  bool finished() const { return last_step >= total_steps; }
};

RunHistory read_run_history(const std::string& dir);

// (x, y) points of `key` over steps > 0, or over every step (validation keys: step 0 is the
// starting point). x is the step, or with `wall_clock` the training seconds up to and including
// that step (the running sum of timing_s/step).
std::vector<std::pair<double, double>> metric_series(const RunHistory& run, const std::string& key, bool wall_clock = false);

// tail_mean, except that "eval:<key>" is the run's eval.json value of <key> (NaN when absent).
double summary_value(const RunHistory& run, const std::string& key, int64_t window);
// The last value logged for `key` (step > 0; eval: keys from eval.json); NaN when none.
double final_value(const RunHistory& run, const std::string& key);

// Mean of `key` over the run's last `window` steps (last_step - window < step, step > 0) that
// have it -- a validation metric logged every 10 steps has one value in a window of 10; NaN when
// none does.
double tail_mean(const RunHistory& run, const std::string& key, int64_t window);

// Mean of `key` over all steps > 0 that have it; NaN when none does.
double run_mean(const RunHistory& run, const std::string& key);

// Keys whose values are not identical across the runs (the run's name and place left out), in
// key order. A key missing from a run counts as differing.
std::vector<std::string> differing_recipe_keys(const std::vector<RunHistory>& runs);

// Runs grouped by configuration (recipes equal except seeds, name and place), in first-seen
// order; each group lists run indices.
std::vector<std::vector<size_t>> group_by_configuration(const std::vector<RunHistory>& runs);

struct MeanSpread {
  double mean = 0, spread = 0;  // spread: sample standard deviation (0 for one value)
  int64_t n = 0;
};
MeanSpread mean_spread(const std::vector<double>& values);  // NaNs left out

// mean_spread of the runs' tail_mean of `key`: a configuration across its seeds.
MeanSpread seed_mean_spread(const std::vector<RunHistory>& runs, const std::vector<size_t>& group, const std::string& key,
                            int64_t window);

}  // namespace fp8rl::trainer
