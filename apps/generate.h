// `fp8rl generate`: prompts from a JSONL file (trainer/prompts.h) through the rollout engine
// (rollout/engine.h) on a BF16 or FP8 model (quant/fp8_model.h), one JSONL line per sample.
//
// Settings come from, in order of precedence: the flags, the recipe (--recipe: model.path,
// model.dtype, model.tokenizer_path, model.chat_template, quantization.*, rollout.*,
// trainer.device, trainer.seed), the defaults below.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace fp8rl {

struct GenerateArgs {
  std::string model;         // --model DIR (with --recipe: replaces model.path)
  std::string recipe;        // --recipe R.yaml
  std::string quantization;  // fp8 | none; "": the recipe's, else fp8 for an FP8 checkpoint, none otherwise
  std::string dtype;         // bfloat16 | float32; "": the recipe's model.dtype, else bfloat16
  std::string device;        // auto | cpu | cuda; "": the recipe's trainer.device, else auto
  std::string prompts;       // --prompts FILE.jsonl
  bool chat = false;         // render "prompt" strings as one user turn of the chat template
  bool enforce_eager = false;  // decode without CUDA graphs (also rollout.enforce_eager)
  bool async_scheduling = false;  // one step in flight (also rollout.async_scheduling)
  std::string kv_cache_dtype;  // auto | fp8; "": the recipe's rollout.kv_cache_dtype, else auto
  std::optional<int64_t> n;               // default 1 (rollout.n with a recipe)
  std::optional<double> temperature;      // default 1.0; 0 = greedy
  std::optional<double> top_p;            // default 1.0 (off)
  std::optional<int64_t> top_k;           // default -1 (off)
  std::optional<int64_t> max_new_tokens;  // default 256 (rollout.max_response_length with a recipe)
  std::optional<uint64_t> seed;           // default 0 (trainer.seed with a recipe)
  std::vector<std::string> stop;          // --stop STR ... (rollout.stop with a recipe)
  std::string output;        // -o OUT.jsonl; "": standard output
};

// Registers the `generate` subcommand and its options on `app`, writing into `args`.
CLI::App* add_generate_command(CLI::App& app, GenerateArgs& args);

int run_generate(const GenerateArgs& args);

}  // namespace fp8rl
