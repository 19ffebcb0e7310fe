// Fuzz: the HF files of a model directory a user points at: config.json, tokenizer.json,
// tokenizer_config.json (chat template), safetensors headers (core/hf; issue 13).
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/hf/chat_template.h"
#include "core/hf/config.h"
#include "core/hf/safetensors.h"
#include "core/hf/tokenizer.h"
#include "tests/fuzz/fuzz.h"
#include "tests/test_util.h"

using namespace fp8rl;
namespace fs = std::filesystem;

namespace {

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

const std::vector<std::string> kJsonDict = {
    "{", "}", "[", "]", "\"", ":", ",", "null", "true", "false", "-1", "0", "1e400", "-1e400",
    "18446744073709551615", "9223372036854775808", "1000000000", "\"\\u0000\"", "\"\\ud800\"", "\\", "[[[[[[[[",
    "{\"a\":{\"a\":", "\"num_hidden_layers\": ", "\"vocab_size\": ", "\"model_type\": ", "\"head_dim\": ",
    "\"num_experts\": ", "\"merges\": ", "\"vocab\": ", "\"added_tokens\": ", "\"pre_tokenizer\": ", "\"pattern\": ",
    "\"Regex\": \"((((((((\"", "\"chat_template\": ", "<|im_start|>", "{% for message in messages %}", "\xff",
    "\"dtype\": \"F8_E5M2\"", "\"shape\": [", "\"data_offsets\": [", "\"__metadata__\": "};

}  // namespace

TEST_CASE("fuzz: config.json parses without crash, hang or a stray exception", "[fuzz][config_json]") {
  std::vector<std::string> corpus;
  for (const char* m : {"qwen3", "qwen2", "llama"}) corpus.push_back(test::read_file(fs::path(FP8RL_TEST_DATA) / "models" / m / "config.json"));
  const fuzz::Stats st = fuzz::run(corpus, kJsonDict, 1303, 20000, 1001, 3.0, [&](const std::string& text) {
    const hf::ModelShape s = hf::parse_hf_config(text, "config.json");
    // Whatever is accepted is within the bounds, so nothing sized from it can explode.
    REQUIRE(s.num_hidden_layers >= 1);
    REQUIRE(s.num_hidden_layers <= hf::kMaxLayers);
    REQUIRE(s.vocab_size <= hf::kMaxVocabSize);
    REQUIRE(s.hidden_size <= hf::kMaxHiddenSize);
  });
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 1001);
  CHECK(st.accepted > 0);
}

TEST_CASE("fuzz: tokenizer.json loads without crash, hang or a stray exception", "[fuzz][tokenizer_json]") {
  test::TempDir dir;
  std::vector<std::string> corpus;
  for (const char* t : {"qwen2", "llama3"}) corpus.push_back(test::read_file(fs::path(FP8RL_TEST_DATA) / "tokenizers" / t / "tokenizer.json"));
  const std::string path = (dir.path() / "tokenizer.json").string();
  const fuzz::Stats st = fuzz::run(corpus, kJsonDict, 1304, 2000, 21, 4.0, [&](const std::string& text) {
    write(path, text);
    const hf::Tokenizer tok = hf::Tokenizer::from_file(path);
    (void)tok.encode("Hello, world! 123 \xc3\xa9\n\n  x");
  });
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 21);
}

TEST_CASE("fuzz: tokenizer_config.json chat templates are detected without crash or a stray exception", "[fuzz][tokenizer_config]") {
  test::TempDir dir;
  const std::vector<std::string> corpus = {
      R"({"bos_token": null, "eos_token": "<|im_end|>", "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"})",
      R"({"bos_token": "<|begin_of_text|>", "chat_template": "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"})",
      R"({"chat_template": [{"name": "default", "template": "x"}]})", R"({})"};
  const std::string path = (dir.path() / "tokenizer_config.json").string();
  const fuzz::Stats st = fuzz::run(corpus, kJsonDict, 1305, 20000, 1001, 3.0, [&](const std::string& text) {
    write(path, text);
    const hf::ChatTemplate t = hf::detect_chat_template(path);
    const hf::ChatMessage msgs[] = {{"user", "hi\n"}};
    (void)hf::render_chat(t, msgs, true);
  });
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 1001);
}

TEST_CASE("fuzz: safetensors headers of a real checkpoint open without crash or a stray exception", "[fuzz][safetensors]") {
  test::TempDir dir;
  // The header of the Qwen3 fixture with its data cut to what the header names (~0.5 MB).
  const std::string file = test::read_file(fs::path(FP8RL_TEST_DATA) / "models" / "qwen3" / "model.safetensors");
  const std::string path = (dir.path() / "model.safetensors").string();
  const fuzz::Stats st = fuzz::run({file}, kJsonDict, 1306, 3000, 101, 3.0, [&](const std::string& bytes) {
    write(path, bytes);
    const safetensors::File f(path);
    for (const auto& t : f.tensors()) REQUIRE(t.nbytes == size_t(t.numel()) * safetensors::dtype_size(t.dtype));
  });
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 101);
}
