#include "trainer/stop_tokens.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::trainer {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// A small JSON file of the model directory, or nullopt when it is absent. Refused (ConfigError
// naming the file): not a regular file, over 16 MiB, not JSON.
std::optional<json> read_json_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  if (!S_ISREG(st.st_mode)) throw ConfigError(path + ": not a regular file");
  if (st.st_size > (16 << 20)) throw ConfigError(path + ": larger than 16 MiB; not a config file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open for reading");
  std::ostringstream buf;
  buf << in.rdbuf();
  try {
    return json::parse(buf.str());
  } catch (const json::parse_error& e) {
    throw ConfigError(path + ": not valid JSON (" + std::string(e.what()) + ")");
  }
}

}  // namespace

StopTokens resolve_stop_tokens(const std::string& model_dir, const std::string& tokenizer_dir, const hf::Tokenizer& tok,
                               const std::optional<hf::ChatTemplate>& tmpl, bool chat_in_use) {
  StopTokens out;
  const int32_t vocab = tok.vocab_size();
  auto add = [&](int64_t id, const std::string& where) {
    if (id < 0 || id >= vocab)
      throw ConfigError(cat(where, ": eos token id ", id, " is outside the tokenizer's vocabulary (", vocab, " ids)"));
    if (std::find(out.ids.begin(), out.ids.end(), id) == out.ids.end()) out.ids.push_back(static_cast<int32_t>(id));
  };
  const std::string gen_path = (fs::path(model_dir) / "generation_config.json").string();
  if (std::optional<json> g = read_json_file(gen_path); g && g->is_object() && g->contains("eos_token_id")) {
    const json& e = (*g)["eos_token_id"];
    if (e.is_number_integer()) add(e.get<int64_t>(), gen_path);
    else if (e.is_array())
      for (const json& v : e) {
        if (!v.is_number_integer()) throw ConfigError(gen_path + ": eos_token_id: expected integers, got " + v.dump());
        add(v.get<int64_t>(), gen_path);
      }
    else if (!e.is_null()) throw ConfigError(gen_path + ": eos_token_id: expected an integer or a list of integers");
    if (!out.ids.empty()) out.source = gen_path;
  }
  if (out.ids.empty()) {
    const std::string tc_path = fs::is_directory(tokenizer_dir) ? (fs::path(tokenizer_dir) / "tokenizer_config.json").string()
                                                                  : (fs::path(tokenizer_dir).parent_path() / "tokenizer_config.json").string();
    if (std::optional<json> t = read_json_file(tc_path); t && t->is_object() && t->contains("eos_token")) {
      const json& e = (*t)["eos_token"];
      std::string text;
      if (e.is_string()) text = e.get<std::string>();
      else if (e.is_object() && e.contains("content") && e["content"].is_string()) text = e["content"].get<std::string>();
      if (!text.empty()) {
        const std::optional<int32_t> id = tok.token_to_id(text);
        if (!id) throw ConfigError(tc_path + ": eos_token '" + text + "' is not a token of " + tok.path());
        add(*id, tc_path);
        out.source = tc_path;
      }
    }
  }
  if (tmpl && (out.ids.empty() || chat_in_use)) {
    const char* end = tmpl->format == hf::ChatFormat::chatml ? "<|im_end|>"
                      : tmpl->format == hf::ChatFormat::llama3 ? "<|eot_id|>"
                                                              : nullptr;
    if (end) {
      if (const std::optional<int32_t> id = tok.token_to_id(end)) {
        const size_t before = out.ids.size();
        add(*id, "chat template");
        if (out.ids.size() > before)
          out.source += (out.source.empty() ? "" : " + ") + std::string("the chat template's end of turn ") + end;
      }
    }
  }
  return out;
}


std::shared_ptr<const std::vector<std::string>> token_byte_table(const hf::Tokenizer& tok) {
  auto bytes = std::make_shared<std::vector<std::string>>();
  bytes->reserve(static_cast<size_t>(tok.vocab_size()));
  for (int32_t id = 0; id < tok.vocab_size(); ++id) bytes->push_back(tok.id_to_bytes(id));
  return bytes;
}

}  // namespace fp8rl::trainer
