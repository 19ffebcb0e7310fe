// Subcommands of the fp8rl CLI. Each takes its parsed arguments and returns an exit code;
// errors are thrown as ConfigError / RuntimeFailure and reported by main().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apps/bench_forward.h"
#include "apps/bench_rollout.h"

namespace fp8rl {

struct CheckArgs {
  std::string recipe;
  std::vector<std::string> overrides;
  bool list_keys = false;
  bool plain = false;
};
int run_check(const CheckArgs& args);

struct TrainArgs {
  std::string recipe;
  std::vector<std::string> overrides;
  std::string resume;  // "" | auto | a checkpoint directory
  int gpus = 0;        // --gpus: trainer.n_gpus_per_node when > 0
  std::vector<std::string> argv;  // the whole command line, for the ranks of a data-parallel run
};
int run_train_command(const TrainArgs& args);

struct SftArgs {
  std::string recipe;
  std::vector<std::string> overrides;
};
int run_sft_command(const SftArgs& args);

struct DataArgs {
  std::string task, output;
  int64_t count = 1000;
  uint64_t seed = 0;
};
int run_data(const DataArgs& args);

int run_export(const std::string& source, const std::string& out, bool fp8);

struct EvalArgs {
  std::string source;                  // a run directory or a checkpoint directory
  std::vector<std::string> overrides;  // on top of the checkpoint's resolved recipe
  std::string output;                  // also write the JSON result here ("" = stdout only)
};
int run_eval(const EvalArgs& args);

struct InitArgs {
  std::string arch = "qwen3";  // qwen3 | qwen2 | llama
  std::string preset = "tiny"; // core/recipe/model_presets.h
  std::string out;
  uint64_t seed = 0;
  bool fp8 = false;            // decoder projections in HF's FP8 format (quant/random_fp8_checkpoint.h)
  std::string device = "cpu";  // cpu | cuda: where the weights are drawn (and quantized); the two draw differently
};
int run_init(const InitArgs& args);

struct BenchGemmArgs {
  std::vector<std::string> models{"0.6b", "8b", "32b"};
  std::vector<int64_t> ms{1, 16, 64, 256, 1024, 4096};
  int reps = 30;
  bool no_backward = false;
  std::string output;  // also write the Markdown report here
};
int run_bench_gemm(const BenchGemmArgs& args);

struct BenchForwardArgs {
  ForwardBenchOptions options;
  std::string output;  // also write the Markdown report here
};
int run_bench_forward(const BenchForwardArgs& args);

struct BenchRolloutArgs {
  RolloutBenchOptions options;
  std::string output;  // also write the Markdown report here
};
int run_bench_rollout(const BenchRolloutArgs& args);

}  // namespace fp8rl
