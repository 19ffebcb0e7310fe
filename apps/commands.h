// Subcommands of the fp8rl CLI. Each takes its parsed arguments and returns an exit code;
// errors are thrown as ConfigError / RuntimeFailure and reported by main().
#pragma once

#include <string>
#include <vector>

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
};
int run_train_command(const TrainArgs& args);

}  // namespace fp8rl
