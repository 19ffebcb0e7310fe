#include "apps/generate.h"
#include "apps/cli_seed.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/hf/chat_template.h"
#include "core/hf/tokenizer.h"
#include "core/model/model_config.h"
#include "core/recipe/load.h"
#include "core/recipe/validate.h"
#include "core/util/atomic_file.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "quant/fp8_model.h"
#include "quant/hf_fp8.h"
#include "rollout/engine.h"
#include "trainer/data.h"
#include "trainer/policy.h"
#include "trainer/prompts.h"
#include "trainer/rl_step.h"
#include "rollout/stop_strings.h"
#include "trainer/stop_tokens.h"

namespace fp8rl {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Every knob after flags > recipe > defaults, with where each came from (for range errors).
struct Settings {
  std::string model_dir, tokenizer_dir, chat_setting = "auto", prompt_key = "prompt";
  recipe::QuantizationConfig quant;
  std::string dtype = "bfloat16", device = "auto";
  int64_t n = 1, top_k = -1, max_new_tokens = 256;
  double temperature = 1.0, top_p = 1.0;
  // The rollout.* keys the engine reads (trainer::engine_config, as in training): the recipe's,
  // else the recipe defaults but for the memory fraction (no trainer shares the GPU here); flags
  // override some. Its n, temperature, ... are not read: the fields above are.
  recipe::RolloutConfig engine = [] {
    recipe::RolloutConfig ro;
    ro.gpu_memory_utilization = 0.9;
    return ro;
  }();
  uint64_t seed = 0;
};

// "--n" when the flag set it, "r.yaml:12: rollout.n" when the recipe did.
std::string origin(bool flag_set, const char* flag, const std::optional<recipe::LoadedRecipe>& loaded, const char* key) {
  if (flag_set || !loaded) return flag;
  return loaded->where(key);
}

Settings resolve(const GenerateArgs& a) {
  Settings s;
  std::optional<recipe::LoadedRecipe> loaded;
  if (!a.recipe.empty()) {
    loaded = recipe::load_recipe(a.recipe);
    const recipe::Recipe& r = loaded->recipe;
    s.model_dir = r.model.path;
    s.tokenizer_dir = r.model.tokenizer_path;
    s.chat_setting = r.model.chat_template;
    s.prompt_key = r.data.prompt_key;
    s.quant = r.quantization;
    s.dtype = r.model.dtype;
    s.device = r.trainer.device;
    s.n = r.rollout.n;
    s.temperature = r.rollout.temperature;
    s.top_p = r.rollout.top_p;
    s.top_k = r.rollout.top_k;
    s.max_new_tokens = r.rollout.max_response_length;
    s.engine = r.rollout;
    s.seed = static_cast<uint64_t>(r.trainer.seed);
  }
  if (!a.model.empty()) s.model_dir = a.model;
  if (a.enforce_eager) s.engine.enforce_eager = true;
  if (a.async_scheduling) s.engine.async_scheduling = true;
  if (!a.kv_cache_dtype.empty()) s.engine.kv_cache_dtype = a.kv_cache_dtype;
  if (s.model_dir.empty()) {
    if (!loaded) throw ConfigError("generate: --model DIR or --recipe R.yaml is required");
    throw ConfigError(loaded->where("model.path") + ": generate needs a checkpoint directory (model.path" +
                      (loaded->recipe.model.init_preset.empty() ? std::string()
                                                                : "; model.init_preset has no tokenizer: write one with "
                                                                  "`fp8rl init --out DIR`") +
                      "); or pass --model DIR");
  }
  std::error_code ec;
  const fs::file_status st = fs::status(s.model_dir, ec);
  if (!fs::exists(st)) throw ConfigError("generate: model directory '" + s.model_dir + "' does not exist");
  if (!fs::is_directory(st)) throw ConfigError("generate: model path '" + s.model_dir + "' is not a directory");
  if (s.tokenizer_dir.empty()) s.tokenizer_dir = s.model_dir;

  if (!a.quantization.empty()) s.quant.quant_method = a.quantization;
  else if (!loaded) s.quant.quant_method = quant::read_hf_fp8_config(s.model_dir) ? "fp8" : "none";
  if (!a.dtype.empty()) s.dtype = a.dtype;
  if (!a.device.empty()) s.device = a.device;
  if (a.n) s.n = *a.n;
  if (a.temperature) s.temperature = *a.temperature;
  if (a.top_p) s.top_p = *a.top_p;
  if (a.top_k) s.top_k = *a.top_k;
  if (a.max_new_tokens) s.max_new_tokens = *a.max_new_tokens;
  if (a.seed) s.seed = *a.seed;
  if (!a.stop.empty()) s.engine.stop = a.stop;
  for (const std::string& st : s.engine.stop)
    if (st.empty()) throw ConfigError(origin(!a.stop.empty(), "--stop", loaded, "rollout.stop") + ": an empty stop string would end every sample at once");

  auto need = [&](bool ok, bool flag_set, const char* flag, const char* key, const std::string& what) {
    if (!ok) throw ConfigError(origin(flag_set, flag, loaded, key) + ": " + what);
  };
  need(s.n >= 1 && s.n <= 65536, a.n.has_value(), "--n", "rollout.n", "samples per prompt must be in [1, 65536], got " + std::to_string(s.n));
  need(std::isfinite(s.temperature) && (s.temperature == 0 || s.temperature >= recipe::kMinTemperature),
       a.temperature.has_value(), "--temperature", "rollout.temperature",
       cat("the temperature must be 0 (greedy) or >= ", recipe::kMinTemperature, ", got ", s.temperature));
  need(std::isfinite(s.top_p) && s.top_p > 0 && s.top_p <= 1, a.top_p.has_value(), "--top-p", "rollout.top_p",
       cat("top-p must be in (0, 1], got ", s.top_p));
  need(s.top_k == -1 || s.top_k > 0, a.top_k.has_value(), "--top-k", "rollout.top_k",
       cat("top-k must be -1 (off) or > 0, got ", s.top_k));
  need(s.max_new_tokens >= 1 && s.max_new_tokens <= (int64_t(1) << 24), a.max_new_tokens.has_value(), "--max-new-tokens",
       "rollout.max_response_length", cat("must be in [1, 2^24], got ", s.max_new_tokens));
  need(s.engine.max_num_seqs >= 1 && s.engine.max_num_seqs <= (1 << 20), false, "", "rollout.max_num_seqs",
       cat("must be in [1, 2^20], got ", s.engine.max_num_seqs));
  const double mem = s.engine.gpu_memory_utilization;
  need(mem > 0 && mem <= 1, false, "", "rollout.gpu_memory_utilization", cat("must be in (0, 1], got ", mem));
  return s;
}

// Shortest text that reads back as the same float; null for a non-finite value (JSON has none).
void append_float(std::string& out, float v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

std::string json_string(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

double round2(double x) { return std::round(x * 100) / 100; }
double seconds(std::chrono::steady_clock::time_point since) {
  return round2(std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count());
}


}  // namespace

CLI::App* add_generate_command(CLI::App& app, GenerateArgs& a) {
  CLI::App* g = app.add_subcommand("generate", "Sample completions of JSONL prompts with the rollout engine (BF16 or FP8)");
  g->add_option("--model", a.model, "HF checkpoint directory (with --recipe: replaces model.path)");
  g->add_option("--recipe", a.recipe, "recipe: model, quantization and rollout.* settings (flags override them)");
  g->add_option("--quantization", a.quantization, "fp8 | none (default: the recipe's; else fp8 only for an FP8 checkpoint)")
      ->check(CLI::IsMember({"fp8", "none"}));
  g->add_option("--dtype", a.dtype, "bfloat16 | float32 (default: the recipe's model.dtype, else bfloat16)")
      ->check(CLI::IsMember({"bfloat16", "float32"}));
  g->add_option("--device", a.device, "auto | cpu | cuda (default: the recipe's trainer.device, else auto)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  g->add_option("--prompts", a.prompts, "JSONL file: {\"prompt\": \"...\"} or {\"messages\": [...]} per line")->required();
  g->add_flag("--chat", a.chat, "render \"prompt\" strings as a user turn of the model's chat template");
  g->add_flag("--enforce-eager", a.enforce_eager, "decode without CUDA graphs (rollout.enforce_eager)");
  g->add_flag("--async-scheduling", a.async_scheduling,
              "schedule each step before reading the previous step's tokens (rollout.async_scheduling)");
  g->add_option("--kv-cache-dtype", a.kv_cache_dtype, "auto (the model dtype) | fp8 (E4M3, per-layer scales; rollout.kv_cache_dtype)")
      ->check(CLI::IsMember({"auto", "fp8"}));
  g->add_option("--n", a.n, "samples per prompt (default 1; rollout.n)");
  g->add_option("--temperature", a.temperature, "sampling temperature, 0 = greedy (default 1; rollout.temperature)");
  g->add_option("--top-p", a.top_p, "nucleus sampling mass in (0, 1] (default 1 = off; rollout.top_p)");
  g->add_option("--stop", a.stop, "stop string (repeatable): a sample ends once its text holds one; cut from the text (rollout.stop)");
  g->add_option("--top-k", a.top_k, "keep the k most likely tokens, -1 = off (default; rollout.top_k)");
  g->add_option("--max-new-tokens", a.max_new_tokens, "generated tokens per sample at most (default 256; rollout.max_response_length)");
  g->add_option("--seed", a.seed, "sampling seed (default 0; trainer.seed)")->check(seed_validator());
  g->add_option("-o,--output", a.output, "write the JSONL here (atomically, at the end) instead of standard output");
  return g;
}

int run_generate(const GenerateArgs& args) {
  const auto t_start = std::chrono::steady_clock::now();
  const Settings s = resolve(args);
  const at::Device device = trainer::resolve_device(s.device, "generate: --device");
  const at::ScalarType dtype = trainer::resolve_dtype(s.dtype, "generate: --dtype");
  if (!args.output.empty()) check_output_file(args.output, "generate: -o");  // fail now, not after the whole run

  // Prompts, tokenizer, template: everything a user's file can get wrong, before the weights load.
  const std::vector<trainer::Prompt> prompts = trainer::read_prompts_jsonl(args.prompts, s.prompt_key);
  const hf::Tokenizer tok = hf::Tokenizer::from_file(s.tokenizer_dir);
  const bool chat_in_use = args.chat || std::any_of(prompts.begin(), prompts.end(), [](const auto& p) { return p.is_chat(); });
  std::optional<hf::ChatTemplate> tmpl;
  try {
    tmpl = hf::resolve_chat_template(s.chat_setting, s.tokenizer_dir);
  } catch (const ConfigError&) {
    if (chat_in_use) throw;  // needed: say why it cannot be rendered
  }
  const model::ModelConfig mc = model::read_model_config(s.model_dir);
  const int64_t max_model_len = mc.max_position_embeddings;
  std::vector<std::vector<rollout::TokenId>> ids(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const trainer::Prompt& p = prompts[i];
    const std::string where = cat(args.prompts, ":", p.line, ": ");
    std::string text = p.text;
    try {
      if (p.is_chat()) text = hf::render_chat(*tmpl, p.messages, true);
      else if (args.chat) {
        const std::vector<hf::ChatMessage> m{{"user", p.text}};
        text = hf::render_chat(*tmpl, m, true);
      }
      ids[i] = tok.encode(text);
    } catch (const ConfigError& e) {
      throw ConfigError(where + e.what());
    }
    if (ids[i].empty()) throw ConfigError(where + "the prompt encodes to no tokens");
    for (rollout::TokenId t : ids[i])
      if (t >= mc.shape.vocab_size)
        throw ConfigError(cat(where, "token id ", t, " of the prompt is outside the model's vocabulary (", mc.shape.vocab_size,
                              "); tokenizer ", tok.path(), " does not belong to ", s.model_dir));
    if (max_model_len > 0 && static_cast<int64_t>(ids[i].size()) + s.max_new_tokens > max_model_len)
      throw ConfigError(cat(where, "the prompt is ", ids[i].size(), " tokens; with ", s.max_new_tokens,
                            " new tokens that exceeds the model's context of ", max_model_len,
                            " (max_position_embeddings); lower --max-new-tokens or shorten the prompt"));
  }
  const trainer::StopTokens stop = trainer::resolve_stop_tokens(s.model_dir, s.tokenizer_dir, tok, tmpl, chat_in_use);
  if (stop.ids.empty())
    log::warn("generate: no EOS token in generation_config.json, tokenizer_config.json or a chat template; "
              "every sample runs to --max-new-tokens");
  else {
    std::string names;
    for (rollout::TokenId id : stop.ids) names += cat(names.empty() ? "" : ", ", tok.id_to_bytes(id), " (", id, ")");
    log::info(cat("generate: stop tokens ", names, " from ", stop.source));
  }

  // The model: headers checked first (missing or corrupt checkpoints are one ConfigError line).
  quant::check_model_dir(s.model_dir, s.quant);
  model::LoadOptions base;
  base.dtype = dtype;
  base.device = device;
  quant::PrecisionPlan plan;
  const auto t_load = std::chrono::steady_clock::now();
  const model::CausalLM model = quant::load_causal_lm(s.model_dir, s.quant, base, &plan);
  log::info(cat("generate: loaded ", s.model_dir, " (", s.quant.quant_method == "fp8" ? "FP8" : "dense", ", ", s.dtype, ", ",
                device.str(), ") in ",
                seconds(t_load), " s; ", plan.summary()));

  rollout::Engine engine(model, trainer::engine_config(s.engine, tok));

  std::vector<rollout::GenerateRequest> requests(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    rollout::GenerateRequest& r = requests[i];
    r.prompt = ids[i];
    r.params.n = static_cast<int32_t>(s.n);
    r.params.max_new_tokens = static_cast<int32_t>(s.max_new_tokens);
    r.params.stop_token_ids = stop.ids;
    r.params.stop_strings = s.engine.stop;
    r.sampling.temperature = s.temperature;
    r.sampling.top_k = s.top_k > 0 ? s.top_k : 0;
    r.sampling.top_p = s.top_p;
    r.sampling.seed = trainer::mix_seed(s.seed, i);  // per prompt, so chunking changes nothing
  }

  // Chunks of prompts, so progress shows and the CPU pool stays bounded; each is one rollout.
  const int32_t tok_vocab = tok.vocab_size();
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, 4 * s.engine.max_num_seqs / s.n));
  std::string file_out;
  int64_t tokens = 0, saved = 0, preemptions = 0, failed = 0;
  std::string first_failure;
  double gen_seconds = 0;
  for (size_t begin = 0; begin < requests.size(); begin += chunk) {
    const size_t end = std::min(requests.size(), begin + chunk);
    const std::vector<rollout::GenerateRequest> part(requests.begin() + static_cast<std::ptrdiff_t>(begin),
                                                    requests.begin() + static_cast<std::ptrdiff_t>(end));
    const std::vector<rollout::GenerateOutput> outs = engine.generate(part);
    const rollout::EngineStats& st = engine.last_stats();
    tokens += st.generated_tokens;
    saved += st.prefill_tokens_saved;
    preemptions += st.preemptions;
    gen_seconds += st.seconds;
    std::string lines;
    for (size_t k = 0; k < outs.size(); ++k) {
      const size_t i = begin + k;
      const rollout::RequestOutput& o = outs[k].output;
      const std::string head = cat("{\"prompt_index\":", i, ",\"line\":", prompts[i].line, ",\"prompt_tokens\":", ids[i].size());
      if (o.finish_reason == rollout::FinishReason::kError) {
        ++failed;
        if (first_failure.empty()) first_failure = cat(args.prompts, ":", prompts[i].line, ": ", o.error);
        log::warn(cat("generate: ", args.prompts, ":", prompts[i].line, ": failed: ", o.error));
        for (int64_t j = 0; j < s.n; ++j)
          lines += cat(head, ",\"sample_index\":", j, ",\"text\":\"\",\"token_ids\":[],\"logprobs\":[],\"finish_reason\":\"error\",\"error\":",
                       json_string(o.error), "}\n");
        continue;
      }
      for (size_t j = 0; j < o.samples.size(); ++j) {
        const rollout::SampleOutput& so = o.samples[j];
        size_t text_len = so.tokens.size();
        if (so.finish_reason == rollout::FinishReason::kStop && text_len > 0 &&
            std::find(stop.ids.begin(), stop.ids.end(), so.tokens.back()) != stop.ids.end())
          --text_len;  // the stop token is not text
        // Ids past the tokenizer's vocabulary (the model's embedding is often padded: Qwen3 151936
        // rows, 151669 tokens) have no text; HF's decode skips them too.
        std::vector<int32_t> text_ids;
        for (size_t t = 0; t < text_len; ++t)
          if (so.tokens[t] >= 0 && so.tokens[t] < tok_vocab) text_ids.push_back(so.tokens[t]);
        std::string text = tok.decode(text_ids);
        text.resize(rollout::stop_string_position(text, s.engine.stop));  // a stop string and what follows are not text
        std::string line = cat(head, ",\"sample_index\":", j, ",\"text\":", json_string(text),
                               ",\"token_ids\":[");
        for (size_t t = 0; t < so.tokens.size(); ++t) line += cat(t ? "," : "", so.tokens[t]);
        line += "],\"logprobs\":[";
        for (size_t t = 0; t < so.logprobs.size(); ++t) {
          if (t) line += ',';
          append_float(line, so.logprobs[t]);
        }
        line += cat("],\"finish_reason\":\"", rollout::to_string(so.finish_reason), "\"}\n");
        lines += line;
      }
    }
    if (args.output.empty()) std::cout << lines << std::flush;
    else file_out += lines;
    log::info(cat("generate: ", end, "/", requests.size(), " prompts, ", tokens, " tokens, ",
                  gen_seconds > 0 ? static_cast<int64_t>(static_cast<double>(tokens) / gen_seconds) : 0, " tokens/s"));
  }
  if (!args.output.empty()) write_file_atomic(args.output, file_out);
  const double total = seconds(t_start);
  log::info(cat("generate: ", prompts.size(), " prompts x ", s.n, " samples, ", tokens, " tokens in ", round2(gen_seconds),
                " s of generation (", gen_seconds > 0 ? static_cast<int64_t>(static_cast<double>(tokens) / gen_seconds) : 0,
                " tokens/s; ", round2(total), " s in all), prefill tokens saved by prefix sharing ", saved, ", preemptions ",
                preemptions, args.output.empty() ? std::string() : ", written to " + args.output));
  if (failed > 0)
    throw RuntimeFailure(cat(failed, " of ", prompts.size(), " prompts failed in the engine (their lines have finish_reason "
                             "\"error\"); first: ", first_failure));
  return kExitOk;
}

}  // namespace fp8rl
