// The validator of every --seed option. CLI11 reads an unsigned option with strtoull, which
// wraps "-1" to 2^64 - 1 and clamps a value past 2^64 without a word; seeds here are checked as
// text first: digits only, at most 2^63 - 1 (what a recipe's int64 trainer.seed can hold too).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace fp8rl {

inline CLI::Validator seed_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        const bool digits = !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
        if (!digits || s.size() > 19 || (s.size() == 19 && s > "9223372036854775807"))
          return "expected an integer from 0 to 9223372036854775807, got '" + s + "'";
        return {};
      },
      "SEED", "seed");
}

}  // namespace fp8rl
