// libFuzzer entry points for the longer runs (CMake -DFP8RL_FUZZ=ON with clang; README,
// "Fuzzing"). One binary per parser, chosen by FP8RL_FUZZ_TARGET at compile time:
//   recipe       a recipe YAML file, loaded and validated
//   overrides    one command-line override on top of a valid recipe, loaded and validated
//   config       config.json
//   tokenizer    tokenizer.json, loaded, then one encode
//   chat         tokenizer_config.json: chat template detection and one render
//   safetensors  a .safetensors file (header checks, every span inside the file)
//   prompts      a prompts JSONL file (trainer/prompts.h: text or chat messages per line)
//   checkpoint   a checkpoint's manifest.json over real files (trainer/checkpoint_store.h)
// A user's file may only be refused with ConfigError, on one line; anything else (another
// exception, a crash, an ASan report, a timeout) is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/hf/chat_template.h"
#include "core/hf/config.h"
#include "core/hf/safetensors.h"
#include "core/hf/tokenizer.h"
#include "core/recipe/load.h"
#include "core/recipe/validate.h"
#include "core/util/error.h"
#include "trainer/checkpoint_store.h"
#include "trainer/prompts.h"

namespace {

const std::string& scratch(const char* name) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/fp8rl-libfuzzer-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (!d) std::abort();
    return std::string(d);
  }();
  static std::string path;
  path = dir + "/" + name;
  return path;
}

std::string write(const char* name, const std::string& text) {
  const std::string path = scratch(name);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  return path;
}

void parse(const std::string& input) {
  using namespace fp8rl;
#if FP8RL_FUZZ_TARGET_recipe
  recipe::validate_recipe(recipe::load_recipe(write("r.yaml", input)));
#elif FP8RL_FUZZ_TARGET_overrides
  recipe::validate_recipe(
      recipe::load_defaults({"model.init_preset=tiny", "data.synthetic_task=addition", "reward.type=synthetic", input}));
#elif FP8RL_FUZZ_TARGET_config
  (void)hf::parse_hf_config(input, "config.json");
#elif FP8RL_FUZZ_TARGET_tokenizer
  const hf::Tokenizer tok = hf::Tokenizer::from_file(write("tokenizer.json", input));
  (void)tok.encode("Hello, world! 123 \xc3\xa9\n\n  x");
#elif FP8RL_FUZZ_TARGET_chat
  const hf::ChatTemplate t = hf::detect_chat_template(write("tokenizer_config.json", input));
  const hf::ChatMessage msgs[] = {{"user", "hi\n"}};
  (void)hf::render_chat(t, msgs, true);
#elif FP8RL_FUZZ_TARGET_safetensors
  const safetensors::File f(write("model.safetensors", input));
  for (const auto& t : f.tensors())
    if (t.nbytes != size_t(t.numel()) * safetensors::dtype_size(t.dtype)) std::abort();
#elif FP8RL_FUZZ_TARGET_prompts
  (void)trainer::read_prompts_jsonl(write("prompts.jsonl", input), "prompt");
#elif FP8RL_FUZZ_TARGET_checkpoint
  static const std::filesystem::path ckpt = [] {  // one real checkpoint; each input replaces its manifest
    const trainer::CheckpointStore store(scratch("run"), 0);
    const std::filesystem::path staging = store.begin(7);
    std::ofstream(staging / "policy.safetensors") << std::string(100, 'w');
    return store.commit(staging, 7);
  }();
  std::ofstream(ckpt / trainer::kManifestFile, std::ios::binary | std::ios::trunc) << input;
  if (trainer::verify_checkpoint(ckpt) != 7) std::abort();  // accepted: it must still be this checkpoint
#else
#error "define FP8RL_FUZZ_TARGET_<name>"
#endif
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  try {
    parse(input);
  } catch (const fp8rl::ConfigError& e) {
    const std::string line = fp8rl::one_line(e.what());
    if (line.empty() || line.find('\n') != std::string::npos) std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: %s\n", fp8rl::one_line(e.what()).c_str());
    std::abort();
  }
  return 0;
}
