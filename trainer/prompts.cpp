#include "trainer/prompts.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/strings.h"

namespace fp8rl::trainer {

namespace {

using json = nlohmann::json;

constexpr const char* kExpected =
    "expected one JSON object per line with \"prompt\" (a string or a list of messages) or \"messages\" "
    "(a list of {\"role\": \"system|user|assistant\", \"content\": \"...\"})";

const char* type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unsupported value";
  }
}

std::string quoted(const std::string& key) { return "\"" + key + "\""; }

std::vector<hf::ChatMessage> parse_messages(const json& list, const std::string& where, const std::string& key) {
  if (list.empty()) throw ConfigError(where + quoted(key) + " is an empty list; expected at least one message");
  std::vector<hf::ChatMessage> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& m = list[i];
    const std::string at = where + quoted(key) + "[" + std::to_string(i) + "]";
    if (!m.is_object())
      throw ConfigError(at + ": expected an object {\"role\": ..., \"content\": ...}, got " + type_name(m));
    const auto role = m.find("role");
    const auto content = m.find("content");
    if (role == m.end() || !role->is_string())
      throw ConfigError(at + ": expected a string \"role\" (system, user or assistant), got " +
                        (role == m.end() ? std::string("none") : type_name(*role)));
    if (content == m.end() || !content->is_string())
      throw ConfigError(at + ": expected a string \"content\", got " +
                        (content == m.end() ? std::string("none") : type_name(*content)));
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant")
      throw ConfigError(at + ": unknown role '" + r + "'; expected system, user or assistant");
    out.push_back({r, content->get<std::string>()});
  }
  return out;
}

Prompt parse_line(std::string_view line, const std::string& where, const std::string& prompt_key,
                  const std::string& answer_key) {
  json j;
  try {
    j = json::parse(line.begin(), line.end());
  } catch (const json::exception& e) {
    // parse errors, and out_of_range for a number past double (found by libFuzzer: "1e555")
    throw ConfigError(where + "not valid JSON (" + std::string(without_library_tag(e.what())) + "); " + kExpected);
  }
  if (!j.is_object()) throw ConfigError(where + "got " + std::string(type_name(j)) + "; " + kExpected);
  Prompt p;
  if (const auto a = j.find(answer_key); a != j.end()) {
    if (a->is_string()) p.answer = a->get<std::string>();
    else if (a->is_number()) p.answer = a->dump();
    else throw ConfigError(where + quoted(answer_key) + ": expected the reference answer as a string or a number, got " +
                           type_name(*a));
  }
  if (const auto m = j.find("messages"); m != j.end()) {
    if (!m->is_array()) throw ConfigError(where + "\"messages\": expected a list of messages, got " + type_name(*m));
    p.messages = parse_messages(*m, where, "messages");
    return p;
  }
  const auto v = j.find(prompt_key);
  if (v == j.end()) throw ConfigError(where + "no " + quoted(prompt_key) + " or \"messages\" key; " + kExpected);
  if (v->is_string()) {
    p.text = v->get<std::string>();
    if (p.text.empty()) throw ConfigError(where + quoted(prompt_key) + " is an empty string; expected the prompt text");
  } else if (v->is_array()) {
    p.messages = parse_messages(*v, where, prompt_key);
  } else {
    throw ConfigError(where + quoted(prompt_key) + ": expected a string or a list of messages, got " + type_name(*v));
  }
  return p;
}

}  // namespace

std::vector<Prompt> parse_prompts_jsonl(std::string_view text, const std::string& file, const std::string& prompt_key,
                                        const std::string& answer_key, std::vector<std::string>* skipped) {
  std::vector<Prompt> out;
  int64_t line_no = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank
    Prompt p;
    try {
      p = parse_line(line, file + ":" + std::to_string(line_no) + ": ", prompt_key, answer_key);
    } catch (const ConfigError& e) {
      if (!skipped) throw;
      skipped->push_back(e.what());
      continue;
    }
    p.line = line_no;
    out.push_back(std::move(p));
  }
  if (out.empty() && skipped && !skipped->empty())
    throw ConfigError(file + ": every line is malformed (" + std::to_string(skipped->size()) + " skipped); the first: " +
                      skipped->front());
  if (out.empty()) throw ConfigError(file + ": no prompts (the file is empty); " + kExpected);
  return out;
}

std::vector<Prompt> read_prompts_jsonl(const std::string& path, const std::string& prompt_key,
                                       const std::string& answer_key, std::vector<std::string>* skipped) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw ConfigError("prompts file '" + path + "': " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw ConfigError("prompts file '" + path + "' is not a regular file (expected JSONL)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("prompts file '" + path + "': cannot open for reading");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) throw RuntimeFailure("prompts file '" + path + "': read failed");
  return parse_prompts_jsonl(buf.str(), path, prompt_key, answer_key, skipped);
}

}  // namespace fp8rl::trainer
