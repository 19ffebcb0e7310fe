#include "core/model/byte_tokenizer.h"

#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/hf/unicode.h"

namespace fp8rl::model {
namespace {

using nlohmann::json;

// HF's split patterns (tokenizer.json of Qwen2/Qwen3 and of Llama 3).
constexpr const char* kQwenSplit =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
constexpr const char* kLlamaSplit =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The plain-text branches of the released templates (no tools, no default system turn).
constexpr const char* kChatMlTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
constexpr const char* kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

std::vector<std::string> specials(Family f) {
  if (f == Family::llama)
    return {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
  return {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
}

void write_json(const std::string& path, const json& j) {
  std::ofstream out(path, std::ios::trunc);
  out << j.dump(2) << "\n";
  out.close();
  if (!out) throw RuntimeFailure(cat(path, ": write failed"));
}

}  // namespace

int64_t byte_tokenizer_size(Family family) { return 256 + static_cast<int64_t>(specials(family).size()); }

void write_byte_tokenizer(const std::string& dir, Family family) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::byte_to_utf8(static_cast<uint8_t>(b))] = b;
  json added = json::array();
  const std::vector<std::string> sp = specials(family);
  for (size_t i = 0; i < sp.size(); ++i) {
    vocab[sp[i]] = 256 + i;
    added.push_back({{"id", 256 + i}, {"content", sp[i]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  const bool llama = family == Family::llama;
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"},
                       {"pattern", {{"Regex", llama ? kLlamaSplit : kQwenSplit}}},
                       {"behavior", "Isolated"},
                       {"invert", false}},
                      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab}, {"merges", json::array()}}}};
  write_json(dir + "/tokenizer.json", tok);

  json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"},
              {"model_max_length", 131072},
              {"chat_template", llama ? kLlama3Template : kChatMlTemplate},
              {"eos_token", llama ? "<|eot_id|>" : "<|im_end|>"},
              {"pad_token", llama ? "<|end_of_text|>" : "<|endoftext|>"}};
  if (llama) cfg["bos_token"] = "<|begin_of_text|>";
  write_json(dir + "/tokenizer_config.json", cfg);
}

}  // namespace fp8rl::model
