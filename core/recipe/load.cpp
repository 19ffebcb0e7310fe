#include "core/recipe/load.h"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "core/util/error.h"
#include "core/util/strings.h"

namespace fs = std::filesystem;

namespace fp8rl::recipe {

std::string Source::describe() const {
  if (!override_arg.empty()) {
    // A long override (a 40 KB pattern) is clipped, so the reason after it still fits one line.
    if (override_arg.size() > 120) {
      size_t cut = 117;  // not inside a UTF-8 sequence
      while (cut > 0 && (static_cast<unsigned char>(override_arg[cut]) & 0xC0) == 0x80) --cut;
      return fmt::format("command line '{}...'", override_arg.substr(0, cut));
    }
    return fmt::format("command line '{}'", override_arg);
  }
  if (file.empty()) return "default";
  return line > 0 ? fmt::format("{}:{}", file, line) : file;
}

std::string LoadedRecipe::where(const std::string& key) const {
  auto it = sources.find(key);
  return fmt::format("{}: {}", it == sources.end() ? std::string("default") : it->second.describe(), key);
}

namespace {

struct Entry {
  YAML::Node value;
  Source source;
  // The override's text after '=': string keys take it verbatim, so that
  // `model.path=a: b` is a path and not a YAML map.
  std::optional<std::string> raw;
};
using Layer = std::map<std::string, Entry>;  // dotted key -> the value that wins

// Schema facts, collected once by walking Recipe::visit with a recorder.
struct KeyInfo {
  std::string section, key, type, default_value, doc;
};

std::string render_node(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "nothing (null)";
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  return "a map";
}

std::string quote_choices(const std::vector<std::string>& choices) {
  std::vector<std::string> q;
  for (const auto& c : choices) q.push_back(c.empty() ? "\"\"" : c);
  return join(q, ", ");
}

YAML::Node to_node(const bool& v) { return YAML::Node(v); }
YAML::Node to_node(const int64_t& v) { return YAML::Node(v); }
// The shortest text that reads back as the same double (0.6, not 0.59999999999999998), with a
// ".0" on whole numbers so a float key still reads as a float.
std::string shortest(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".einf") == std::string::npos) s += ".0";
  return s;
}
YAML::Node to_node(const double& v) { return YAML::Node(shortest(v)); }
YAML::Node to_node(const std::optional<double>& v) { return v ? to_node(*v) : YAML::Node(YAML::NodeType::Null); }
YAML::Node to_node(const std::string& v) { return YAML::Node(v); }
template <class T>
YAML::Node to_node(const std::vector<T>& v) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& x : v) n.push_back(x);
  return n;
}

std::string emit_flow(const YAML::Node& n) {
  YAML::Emitter out;
  out.SetSeqFormat(YAML::Flow);
  out << n;
  return out.c_str();
}

// Records the schema (keys, types, defaults, docs) from a default-constructed Recipe.
class SchemaRecorder : public RecipeVisitor {
 public:
  std::vector<KeyInfo> keys;
  std::vector<std::string> sections;
  void section(const char* name, const char*) override {
    section_ = name;
    sections.push_back(name);
  }
  void field(const char* k, bool& v, const char* d) override { add(k, "bool", to_node(v), d); }
  void field(const char* k, int64_t& v, const char* d) override { add(k, "int", to_node(v), d); }
  void field(const char* k, double& v, const char* d) override { add(k, "float", to_node(v), d); }
  void field(const char* k, std::optional<double>& v, const char* d) override {
    add(k, "float or null", to_node(v), d);
  }
  void field(const char* k, std::string& v, const char* d) override { add(k, "string", to_node(v), d); }
  void field(const char* k, std::vector<int64_t>& v, const char* d) override { add(k, "list of int", to_node(v), d); }
  void field(const char* k, std::vector<std::string>& v, const char* d) override {
    add(k, "list of string", to_node(v), d);
  }
  void choice(const char* k, std::string& v, const std::vector<std::string>& c, const char* d) override {
    add(k, "one of " + quote_choices(c), to_node(v), d);
  }

 private:
  void add(const char* k, std::string type, const YAML::Node& def, const char* doc) {
    keys.push_back({section_, k, std::move(type), emit_flow(def), doc});
  }
  std::string section_;
};

const SchemaRecorder& schema() {
  static const SchemaRecorder recorder = [] {
    SchemaRecorder r;
    Recipe defaults;
    defaults.visit(r);
    return r;
  }();
  return recorder;
}

bool is_section(const std::string& name) {
  const auto& s = schema().sections;
  return std::find(s.begin(), s.end(), name) != s.end();
}

[[noreturn]] void fail_at(const Source& src, const std::string& msg) {
  throw ConfigError(src.describe() + ": " + msg);
}

// A hint for an unknown `section.key`: a near key in the same section, or the section that
// has this key.
std::string unknown_key_hint(const std::string& section, const std::string& key) {
  std::vector<std::string> same_section;
  for (const auto& k : schema().keys)
    if (k.section == section) same_section.push_back(k.key);
  if (auto m = closest_match(key, same_section)) return fmt::format(" (did you mean '{}.{}'?)", section, *m);
  for (const auto& k : schema().keys)
    if (k.key == key) return fmt::format(" (did you mean '{}.{}'?)", k.section, k.key);
  return fmt::format(" (section '{}' has: {})", section, join(same_section, ", "));
}

std::string unknown_section_hint(const std::string& section) {
  if (auto m = closest_match(section, schema().sections)) return fmt::format(" (did you mean '{}'?)", *m);
  for (const auto& k : schema().keys)
    if (k.key == section) return fmt::format(" (did you mean '{}.{}'?)", k.section, k.key);
  return fmt::format(" (sections are: {})", join(schema().sections, ", "));
}

// How many files a `base:` chain may hold (the recipe included). Real chains are 2-3 deep; the
// bound keeps a generated chain from recursing without limit.
constexpr size_t kMaxBaseDepth = 32;

// Strict YAML: keys are scalars and appear once per map, at any depth (yaml-cpp keeps both
// copies of a duplicate key and lookups see only one of them).
// `budget` bounds the nodes walked: aliases share nodes, so a small file can name 10^60 of
// them (a "billion laughs"); no recipe comes near the bound.
void check_strict(const YAML::Node& n, const std::string& name, int depth, size_t& budget) {
  if (depth > 64) throw ConfigError(fmt::format("{}:{}: YAML nested deeper than 64 levels", name, n.Mark().line + 1));
  if (budget == 0)
    throw ConfigError(fmt::format("{}: more than 100000 YAML values (aliases expanding?); a recipe is far smaller", name));
  --budget;
  if (n.IsSequence()) {
    for (const auto& item : n) check_strict(item, name, depth + 1, budget);
    return;
  }
  if (!n.IsMap()) return;
  std::map<std::string, int> seen;  // key -> line
  for (auto it = n.begin(); it != n.end(); ++it) {
    const int line = it->first.Mark().line + 1;
    if (!it->first.IsScalar())
      throw ConfigError(fmt::format("{}:{}: a key must be a plain name, got {}", name, line, render_node(it->first)));
    auto [pos, fresh] = seen.emplace(it->first.Scalar(), line);
    if (!fresh)
      throw ConfigError(fmt::format("{}:{}: duplicate key '{}' (first set at line {})", name, line, it->first.Scalar(),
                                    pos->second));
    check_strict(it->second, name, depth + 1, budget);
  }
}

// Counts the documents of a YAML stream (up to 2), remembering where each starts.
class DocumentCounter : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Exactly one YAML document (none = an empty map). A second document (after `---`, or what
// follows an indented first line, which yaml-cpp ends the first document at) is an error, not
// silently dropped. The documents are counted with a cap: yaml-cpp 0.7 reads a stray ',' at the
// top level as an endless stream of empty documents (YAML::LoadAll never returns).
YAML::Node load_one_document(const std::string& text, const std::string& name) {
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentCounter counter;
    while (counter.starts.size() < 2 && parser.HandleNextDocument(counter)) {
    }
    if (counter.starts.size() >= 2) {
      const YAML::Mark& first = counter.starts[0];
      const YAML::Mark& second = counter.starts[1];
      if (second.pos == first.pos && size_t(second.pos) < text.size())
        throw ConfigError(fmt::format("{}:{}:{}: YAML syntax error: unexpected '{}'", name, second.line + 1,
                                      second.column + 1, text[second.pos]));
      throw ConfigError(fmt::format("{}:{}: a second YAML document starts here; a recipe is one document (a '---' "
                                    "separator, or a first line indented deeper than the lines after it?)",
                                    name, second.line + 1));
    }
    if (counter.starts.empty()) return YAML::Node(YAML::NodeType::Null);
    YAML::Node root = YAML::Load(text);
    size_t budget = 100000;
    check_strict(root, name, 0, budget);
    return root;
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}:{}:{}: YAML syntax error: {}", name, e.mark.line + 1, e.mark.column + 1, e.msg));
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: cannot parse the YAML: {}", name, e.msg));
  }
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("{}: cannot open the recipe: {}", file.string(), std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(fmt::format("{}: cannot read the recipe", file.string()));
  return text.str();
}

// Reads one recipe file (its base first) into `layer`. `referrer` is the `base:` line that
// named this file (empty for the recipe itself).
void read_file(const fs::path& file, std::vector<fs::path>& stack, Layer& layer, std::vector<std::string>& files,
               const Source& referrer = {}) {
  const std::string by = referrer.file.empty() ? "" : fmt::format(" (named by base: at {})", referrer.describe());
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(file, ec);
  if (std::find(stack.begin(), stack.end(), canonical) != stack.end())
    throw ConfigError(fmt::format("{}: base recipes form a cycle through this file{}", file.string(), by));
  if (stack.size() >= kMaxBaseDepth)
    throw ConfigError(fmt::format("{}: base: chain is more than {} files deep{}", file.string(), kMaxBaseDepth, by));
  const fs::file_status st = fs::status(file, ec);
  if (!fs::exists(st)) {
    // A path that exists but cannot be resolved (a symlink loop, a permission) says why, not "no such".
    if (ec && ec != std::errc::no_such_file_or_directory)
      throw ConfigError(fmt::format("{}: cannot read the recipe file: {}{}", file.string(), ec.message(), by));
    throw ConfigError(fmt::format("{}: no such recipe file{}", file.string(), by));
  }
  if (!fs::is_regular_file(st))
    throw ConfigError(fmt::format("{}: not a regular file (a recipe is a YAML file){}", file.string(), by));
  const std::string name = file.string();
  YAML::Node root = load_one_document(read_text(file), name);
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap())
    throw ConfigError(fmt::format("{}:{}: a recipe is a map of sections ({}), got {}", name, root.Mark().line + 1,
                                  join(schema().sections, ", "), render_node(root)));
  stack.push_back(canonical);

  if (YAML::Node base = root["base"]) {
    Source src{name, base.Mark().line + 1, ""};
    if (!base.IsScalar() || base.Scalar().empty())
      fail_at(src, "base: expected the path of a base recipe, got " + render_node(base));
    read_file(file.parent_path() / base.Scalar(), stack, layer, files, src);
  }
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string section = it->first.Scalar();
    Source section_src{name, it->first.Mark().line + 1, ""};
    if (section == "base") continue;
    if (!is_section(section)) fail_at(section_src, "unknown section '" + section + "'" + unknown_section_hint(section));
    const YAML::Node body = it->second;
    if (body.IsNull()) continue;  // an empty section
    if (!body.IsMap())
      fail_at(section_src, fmt::format("section '{}' must be a map of keys, got {}", section, render_node(body)));
    for (auto kv = body.begin(); kv != body.end(); ++kv) {
      const std::string key = kv->first.Scalar();
      layer[section + "." + key] = Entry{kv->second, Source{name, kv->first.Mark().line + 1, ""}, std::nullopt};
    }
  }
  files.push_back(name);
  stack.pop_back();
}

void apply_override(const std::string& arg, Layer& layer) {
  Source src{"", 0, arg};
  const auto eq = arg.find('=');
  const std::string key = arg.substr(0, eq);
  const auto dot = key.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot == 0 || dot + 1 == key.size() ||
      key.find('.', dot + 1) != std::string::npos)
    fail_at(src, "expected an override of the form section.key=value");
  const std::string section = key.substr(0, dot), leaf = key.substr(dot + 1);
  if (!is_section(section)) fail_at(src, "unknown section '" + section + "'" + unknown_section_hint(section));
  YAML::Node value;
  try {
    value = load_one_document(arg.substr(eq + 1), "value");
  } catch (const ConfigError& e) {
    fail_at(src, std::string("cannot parse the value as YAML: ") + e.what());
  }
  layer[key] = Entry{value, src, arg.substr(eq + 1)};
}

// Assigns layer values to the recipe's fields, checking types and choices.
class Assigner : public RecipeVisitor {
 public:
  Assigner(const Layer& layer, LoadedRecipe& out) : layer_(layer), out_(out) {}
  std::set<std::string> used;

  void section(const char* name, const char*) override { section_ = name; }

  void field(const char* k, bool& v, const char* d) override {
    if (const Entry* e = find(k)) v = convert<bool>(*e, k, "true or false");
  }
  void field(const char* k, int64_t& v, const char* d) override {
    if (const Entry* e = find(k)) v = convert<int64_t>(*e, k, "an integer");
  }
  void field(const char* k, double& v, const char* d) override {
    if (const Entry* e = find(k)) v = number(*e, k);
  }
  void field(const char* k, std::optional<double>& v, const char* d) override {
    if (const Entry* e = find(k)) v = e->value.IsNull() ? std::nullopt : std::optional<double>(number(*e, k));
  }
  void field(const char* k, std::string& v, const char* d) override {
    if (const Entry* e = find(k)) v = text(*e, k);
  }
  void field(const char* k, std::vector<int64_t>& v, const char* d) override {
    if (const Entry* e = find(k)) v = list<int64_t>(*e, k, "a list of integers");
  }
  void field(const char* k, std::vector<std::string>& v, const char* d) override {
    if (const Entry* e = find(k)) v = list<std::string>(*e, k, "a list of strings");
  }
  void choice(const char* k, std::string& v, const std::vector<std::string>& choices, const char* d) override {
    const Entry* e = find(k);
    if (!e) return;
    std::string s = text(*e, k);
    auto listed = [&](const std::string& c) { return std::find(choices.begin(), choices.end(), c) != choices.end(); };
    // A choice with "true" and "false" among its values (auto | true | false) takes them in every
    // spelling YAML reads as a bool (yes/no, on/off, True, ...), as a bool key would: a recipe
    // written when the key was a bool keeps loading.
    bool b = false;
    if (!listed(s) && listed("true") && listed("false") && e->value.IsScalar() && YAML::convert<bool>::decode(e->value, b))
      s = b ? "true" : "false";
    if (!listed(s)) {
      std::string hint;
      if (auto m = closest_match(s, choices)) hint = fmt::format(" (did you mean '{}'?)", *m);
      fail_at(e->source, fmt::format("{}.{}: '{}' is not one of: {}{}", section_, k, s, quote_choices(choices), hint));
    }
    v = s;
  }

 private:
  const Entry* find(const char* k) {
    std::string dotted = section_ + "." + k;
    auto it = layer_.find(dotted);
    if (it == layer_.end()) return nullptr;
    used.insert(dotted);
    out_.sources[dotted] = it->second.source;
    return &it->second;
  }
  [[noreturn]] void type_error(const Entry& e, const char* k, const char* expected) {
    fail_at(e.source, fmt::format("{}.{}: expected {}, got {}", section_, k, expected, render_node(e.value)));
  }
  template <class T>
  T convert(const Entry& e, const char* k, const char* expected) {
    if (!e.value.IsScalar()) type_error(e, k, expected);
    try {
      return e.value.as<T>();
    } catch (const YAML::Exception&) {
      type_error(e, k, expected);
    }
  }
  std::string text(const Entry& e, const char* k) {
    if (e.raw) return *e.raw;
    return e.value.IsNull() ? std::string() : convert<std::string>(e, k, "a string");
  }
  double number(const Entry& e, const char* k) {
    double x = convert<double>(e, k, "a number");
    if (!std::isfinite(x)) type_error(e, k, "a finite number");
    return x;
  }
  template <class T>
  std::vector<T> list(const Entry& e, const char* k, const char* expected) {
    if (e.value.IsNull()) return {};
    if (e.value.IsScalar()) return {convert<T>(e, k, expected)};  // `train_files: a.jsonl` = one-element list
    if (!e.value.IsSequence()) type_error(e, k, expected);
    std::vector<T> out;
    // A bad element is named by its position and value, not by the whole list.
    auto bad_item = [&](const YAML::Node& item) {
      fail_at(e.source, fmt::format("{}.{}: expected {}, but element {} is {}", section_, k, expected, out.size() + 1,
                                    render_node(item)));
    };
    for (const auto& item : e.value) {
      if (!item.IsScalar()) bad_item(item);
      try {
        out.push_back(item.as<T>());
      } catch (const YAML::Exception&) {
        bad_item(item);
      }
    }
    return out;
  }

  const Layer& layer_;
  LoadedRecipe& out_;
  std::string section_;
};

LoadedRecipe resolve(Layer layer, const std::vector<std::string>& overrides, LoadedRecipe out) {
  for (const auto& arg : overrides) apply_override(arg, layer);
  Assigner assign(layer, out);
  out.recipe.visit(assign);
  for (const auto& [key, entry] : layer) {
    if (assign.used.count(key)) continue;
    const auto dot = key.find('.');
    fail_at(entry.source, "unknown key '" + key + "'" + unknown_key_hint(key.substr(0, dot), key.substr(dot + 1)));
  }
  return out;
}

// Every field's value as emit_flow(to_node(...)) renders it, in visit order, to value().
class FlowValueVisitor : public RecipeVisitor {
 public:
  void section(const char* name, const char*) override {
    section_ = name;
    begin_section(name);
  }
  void field(const char* k, bool& v, const char*) override { value(k, to_node(v)); }
  void field(const char* k, int64_t& v, const char*) override { value(k, to_node(v)); }
  void field(const char* k, double& v, const char*) override { value(k, to_node(v)); }
  void field(const char* k, std::optional<double>& v, const char*) override { value(k, to_node(v)); }
  void field(const char* k, std::string& v, const char*) override { value(k, to_node(v)); }
  void field(const char* k, std::vector<int64_t>& v, const char*) override { value(k, to_node(v)); }
  void field(const char* k, std::vector<std::string>& v, const char*) override { value(k, to_node(v)); }
  void choice(const char* k, std::string& v, const std::vector<std::string>&, const char*) override {
    value(k, to_node(v));
  }

 protected:
  virtual void begin_section(const char*) {}
  virtual void put(const std::string& section, const char* key, const std::string& flow) = 0;

 private:
  void value(const char* k, const YAML::Node& n) { put(section_, k, emit_flow(n)); }
  std::string section_;
};

// "section.key" -> its value (key_values).
class ValueCollector : public FlowValueVisitor {
 public:
  std::map<std::string, std::string> values;

 private:
  void put(const std::string& section, const char* k, const std::string& flow) override { values[section + "." + k] = flow; }
};

// Prints the recipe as YAML, one section at a time, each value optionally with where it came from.
class YamlPrinter : public FlowValueVisitor {
 public:
  YamlPrinter(const LoadedRecipe& loaded, bool annotate) : loaded_(loaded), annotate_(annotate) {}
  std::ostringstream os;

 private:
  void begin_section(const char* name) override { os << (os.tellp() > 0 ? "\n" : "") << name << ":\n"; }
  void put(const std::string& section, const char* k, const std::string& flow) override {
    std::string line = fmt::format("  {}: {}", k, flow);
    auto it = loaded_.sources.find(section + "." + k);
    if (annotate_ && it != loaded_.sources.end())
      line = fmt::format("{:<48} # {}", line, it->second.describe());
    os << line << "\n";
  }
  const LoadedRecipe& loaded_;
  bool annotate_;
};

}  // namespace

LoadedRecipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  LoadedRecipe out;
  out.path = path;
  Layer layer;
  std::vector<fs::path> stack;
  read_file(path, stack, layer, out.files);
  return resolve(std::move(layer), overrides, std::move(out));
}

LoadedRecipe load_defaults(const std::vector<std::string>& overrides) {
  return resolve(Layer{}, overrides, LoadedRecipe{});
}

std::string to_yaml(const LoadedRecipe& loaded, bool annotate) {
  YamlPrinter printer(loaded, annotate);
  Recipe copy = loaded.recipe;  // visit() takes fields by reference
  copy.visit(printer);
  return printer.os.str();
}

std::map<std::string, std::string> key_values(const Recipe& recipe) {
  ValueCollector collector;
  Recipe copy = recipe;  // visit() takes fields by reference
  copy.visit(collector);
  return std::move(collector.values);
}

std::string describe_keys() {
  std::ostringstream os;
  std::string section;
  for (const auto& k : schema().keys) {
    if (k.section != section) os << (section.empty() ? "" : "\n") << k.section << ":\n";
    section = k.section;
    os << fmt::format("  {:<32} {}  [default: {}]\n      {}\n", k.section + "." + k.key, k.type, k.default_value, k.doc);
  }
  return os.str();
}

std::vector<std::string> all_keys() {
  std::vector<std::string> out;
  for (const auto& k : schema().keys) out.push_back(k.section + "." + k.key);
  return out;
}

}  // namespace fp8rl::recipe
