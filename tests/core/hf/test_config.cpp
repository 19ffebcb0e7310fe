// config.json as an adversary writes it: bounded sizes before anything is sized from them,
// numbers beyond int64/double, special files (issue 13).
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>

#include "core/hf/chat_template.h"
#include "core/hf/config.h"
#include "core/hf/safetensors.h"
#include "core/hf/tokenizer.h"
#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::hf;

namespace {
std::string config(const std::string& layers, const std::string& extra = "") {
  return R"({"model_type": "qwen3", "vocab_size": 512, "hidden_size": 64, "num_attention_heads": 4, )"
         R"("num_hidden_layers": )" + layers + extra + "}";
}
}  // namespace

TEST_CASE("config.json sizes are bounded before anything is sized from them", "[config][adversarial]") {
  CHECK(parse_hf_config(config("4"), "c.json").num_hidden_layers == 4);
  REQUIRE_THROWS_CONTAINING(parse_hf_config(config("10000000"), "c.json"), ConfigError,
                            "c.json: num_hidden_layers must be <= 1024, got 10000000");
  REQUIRE_THROWS_CONTAINING(parse_hf_config(config("1000000000"), "c.json"), ConfigError, "num_hidden_layers must be <=");
  REQUIRE_THROWS_CONTAINING(parse_hf_config(config("4", R"(, "vocab_size": 99999999999)"), "c.json"), ConfigError,
                            "vocab_size");
  REQUIRE_THROWS_CONTAINING(parse_hf_config(config("4", R"(, "head_dim": 9223372036854775807)"), "c.json"), ConfigError,
                            "head_dim must be in");
  REQUIRE_THROWS_CONTAINING(parse_hf_config(config("4", R"(, "num_experts": -3)"), "c.json"), ConfigError,
                            "num_experts must be in");
}

TEST_CASE("config.json numbers beyond int64 and double are config errors", "[config][adversarial]") {
  REQUIRE_THROWS_CONTAINING(parse_hf_config(config("18446744073709551615"), "c.json"), ConfigError,
                            "key 'num_hidden_layers' must be an integer");
  REQUIRE_THROWS_CONTAINING(parse_hf_config(config("9223372036854775808"), "c.json"), ConfigError,
                            "must be an integer");
  REQUIRE_THROWS_CONTAINING(parse_hf_config(config(std::string(400, '9')), "c.json"), ConfigError, "c.json: not valid JSON");
  // A long value is clipped in the message.
  const std::string long_string = "\"" + std::string(5000, 'x') + "\"";
  try {
    parse_hf_config(config(long_string), "c.json");
    FAIL("expected ConfigError");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).size() < 200);
  }
}

TEST_CASE("config.json that is a directory or a FIFO is refused without blocking", "[config][adversarial]") {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path() / "d" / "config.json");
  REQUIRE_THROWS_CONTAINING(read_hf_config((dir.path() / "d").string()), ConfigError, "not a regular file");
  std::filesystem::create_directories(dir.path() / "f");
  const std::string fifo = (dir.path() / "f" / "config.json").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  REQUIRE_THROWS_CONTAINING(read_hf_config((dir.path() / "f").string()), ConfigError, "not a regular file");
}

TEST_CASE("safetensors, tokenizer.json and tokenizer_config.json that are FIFOs are refused without blocking", "[config][adversarial]") {
  test::TempDir dir;
  for (const char* name : {"model.safetensors", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"})
    REQUIRE(::mkfifo((dir.path() / name).c_str(), 0600) == 0);
  REQUIRE_THROWS_CONTAINING(safetensors::File((dir.path() / "model.safetensors").string()), ConfigError, "not a regular file");
  REQUIRE_THROWS_CONTAINING(safetensors::Checkpoint((dir.path() / "model.safetensors.index.json").string()), ConfigError,
                            "not a regular file");
  REQUIRE_THROWS_CONTAINING(Tokenizer::from_file(dir.path().string()), ConfigError, "not a regular file");
  REQUIRE_THROWS_CONTAINING(detect_chat_template(dir.path().string()), ConfigError, "not a regular file");
}

TEST_CASE("tokenizer.json token ids are range-checked before they size anything", "[config][adversarial]") {
  // Found by the fuzz test: an id of 10^13 in model.vocab allocated tables until out of memory.
  std::ifstream in(std::string(FP8RL_TEST_DATA) + "/tokenizers/llama3/tokenizer.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string good = ss.str();
  test::TempDir dir;
  for (const char* big : {"10000000002345", "2147483648", "18446744073709551615", "-5", "16777216"}) {
    std::string text = good;
    const size_t at = text.find("\":2345,");
    REQUIRE(at != std::string::npos);
    text.replace(at + 2, 4, big);
    INFO(big);
    REQUIRE_THROWS_CONTAINING(Tokenizer::from_file(dir.write("tokenizer.json", text)), ConfigError, "is not an integer in [0, 16777216)");
  }
}

// Without the key, transformers' default for the model type: the families fp8rl runs untie
// (Qwen2/Qwen3/Llama configs pass tie_word_embeddings=False), PretrainedConfig ties the rest.
TEST_CASE("config.json without tie_word_embeddings takes the model type's transformers default", "[config]") {
  CHECK_FALSE(parse_hf_config(config("2"), "c.json").tie_word_embeddings);
  CHECK(parse_hf_config(config("2", R"(, "tie_word_embeddings": true)"), "c.json").tie_word_embeddings);
  for (const char* type : {"qwen2", "llama", "qwen3_moe", "mixtral"}) {
    const std::string text = R"({"model_type": ")" + std::string(type) +
                             R"(", "vocab_size": 512, "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2})";
    CHECK_FALSE(parse_hf_config(text, "c.json").tie_word_embeddings);
  }
  CHECK(parse_hf_config(R"({"model_type": "gpt2", "vocab_size": 512, "hidden_size": 64, "num_attention_heads": 4, )"
                        R"("num_hidden_layers": 2})",
                        "c.json")
            .tie_word_embeddings);
}
