#include "core/hf/chat_template.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/strings.h"
#include "core/hf/unicode.h"

namespace fp8rl::hf {
namespace {

using nlohmann::json;

constexpr const char* kHint = "set model.chat_template to chatml, llama3 or raw";

// Undo the escapes of a Jinja string literal (the ones a template's literals use).
std::string unescape_jinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char e = s[++i];
    out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
  }
  return out;
}

// The default system text of a Qwen2/2.5 template: the literal
// '<|im_start|>system\n<text><|im_end|>\n' it emits when messages[0] is not a system message.
// Qwen3's template has only '<|im_start|>system\n' + messages[0].content, so it has none.
std::string default_system_of(std::string_view tmpl) {
  const std::string_view marker = "<|im_start|>system\\n";
  for (size_t at = tmpl.find(marker); at != std::string_view::npos; at = tmpl.find(marker, at + 1)) {
    if (at == 0 || (tmpl[at - 1] != '\'' && tmpl[at - 1] != '"')) continue;
    const char quote = tmpl[at - 1];
    size_t end = at + marker.size();
    while (end < tmpl.size() && tmpl[end] != quote) end += tmpl[end] == '\\' ? 2 : 1;
    const std::string_view literal = tmpl.substr(at + marker.size(), end - (at + marker.size()));
    const size_t close = literal.find("<|im_end|>");
    if (close != std::string_view::npos && close > 0) return unescape_jinja(literal.substr(0, close));
  }
  return "";
}

// Jinja's `trim` is Python's str.strip(): whitespace by str.isspace().
bool is_py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string py_strip(std::string_view s) {
  // Decode to (offset, code point) pairs; content is valid UTF-8 here (checked by the caller).
  std::vector<std::pair<size_t, char32_t>> cps;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const utf8::Scan sc = utf8::scan(p + i, s.size() - i);
    char32_t c = p[i];
    if (sc.len == 2) c = ((p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F);
    else if (sc.len == 3) c = ((p[i] & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
    else if (sc.len == 4) c = ((p[i] & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12) | ((p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
    cps.emplace_back(i, c);
    i += sc.len;
  }
  size_t b = 0, e = cps.size();
  while (b < e && is_py_space(cps[b].second)) ++b;
  while (e > b && is_py_space(cps[e - 1].second)) --e;
  if (b == e) return "";
  const size_t from = cps[b].first, to = e < cps.size() ? cps[e].first : s.size();
  return std::string(s.substr(from, to - from));
}

}  // namespace

ChatTemplate detect_chat_template(const std::string& tokenizer_config) {
  namespace fs = std::filesystem;
  const std::string file = fs::is_directory(tokenizer_config)
                               ? (fs::path(tokenizer_config) / "tokenizer_config.json").string()
                               : tokenizer_config;
  std::error_code ec;
  if (fs::exists(file, ec) && !fs::is_regular_file(file, ec))  // a FIFO would block the read
    throw ConfigError(fmt::format("{}: not a regular file, so the chat template is unknown; {}", file, kHint));
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("{}: cannot open, so the chat template is unknown; {}", file, kHint));
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: not valid JSON: {}", file, without_library_tag(e.what())));
  }
  std::string tmpl;
  if (auto t = j.is_object() ? j.find("chat_template") : j.end(); t != j.end()) {
    if (t->is_string()) tmpl = t->get<std::string>();
    else if (t->is_array())  // [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
      for (const auto& e : *t)
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
          tmpl = e["template"].get<std::string>();
  }
  ChatTemplate out;
  out.source = file;
  if (tmpl.find("<|im_start|>") != std::string::npos) {
    out.format = ChatFormat::chatml;
    out.default_system = default_system_of(tmpl);
    out.qwen3_thinking = tmpl.find("<think>") != std::string::npos;
    return out;
  }
  if (tmpl.find("<|start_header_id|>") != std::string::npos) {
    if (tmpl.find("Cutting Knowledge Date") != std::string::npos)
      throw ConfigError(fmt::format("{}: the Llama 3.1+ chat template (dated system header, tools) is not rendered "
                                    "exactly; {} (llama3 renders the plain Llama 3 format)",
                                    file, kHint));
    out.format = ChatFormat::llama3;
    if (auto b = j.find("bos_token"); b != j.end()) {
      if (b->is_string()) out.bos_token = b->get<std::string>();
      else if (b->is_object() && b->contains("content") && (*b)["content"].is_string())
        out.bos_token = (*b)["content"].get<std::string>();
    }
    return out;
  }
  throw ConfigError(fmt::format("unknown chat template in {}; {}", file, kHint));
}

ChatTemplate resolve_chat_template(std::string_view setting, const std::string& tokenizer_dir) {
  if (setting == "auto") return detect_chat_template(tokenizer_dir);
  ChatTemplate out;
  out.source = fmt::format("model.chat_template={}", setting);
  if (setting == "chatml") out.format = ChatFormat::chatml;
  else if (setting == "llama3") out.format = ChatFormat::llama3;
  else if (setting == "raw") out.format = ChatFormat::raw;
  else throw ConfigError(fmt::format("model.chat_template: unknown value '{}'; expected auto, chatml, llama3 or raw", setting));
  return out;
}

std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages, bool add_generation_prompt) {
  size_t last_user = messages.size();
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      throw ConfigError(fmt::format("{}: message {} has role '{}'; only system, user and assistant are supported",
                                    tmpl.source, i, m.role));
    if (!utf8::is_valid(m.content))
      throw ConfigError(fmt::format("{}: message {} is not valid UTF-8", tmpl.source, i));
    if (m.role == "user") last_user = i;
  }
  std::string out;
  switch (tmpl.format) {
    case ChatFormat::raw:
      if (messages.size() != 1 || messages[0].role != "user")
        throw ConfigError(fmt::format("{}: the raw chat template takes exactly one user message (got {})", tmpl.source,
                                      messages.size()));
      return messages[0].content;
    case ChatFormat::chatml:
      if (!tmpl.default_system.empty() && (messages.empty() || messages[0].role != "system"))
        out += "<|im_start|>system\n" + tmpl.default_system + "<|im_end|>\n";
      for (size_t i = 0; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if (tmpl.qwen3_thinking && m.role == "assistant" &&
            (last_user == messages.size() || i > last_user || m.content.find("</think>") != std::string::npos))
          throw ConfigError(fmt::format("{}: message {}: Qwen3's template adds reasoning blocks to assistant turns "
                                        "after the last user turn (or with </think>); not rendered exactly",
                                        tmpl.source, i));
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::llama3:
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0) out += tmpl.bos_token;
        out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" + py_strip(messages[i].content) +
               "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
  }
  FP8RL_CHECK(false, "unhandled ChatFormat");
}

}  // namespace fp8rl::hf
