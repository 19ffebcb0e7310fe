// Bad input as an adversary writes it (issue 13): nothing is silently accepted with a wrong
// result, nothing crashes, and each error names the file and line.
#include <string>

#include "core/recipe/load.h"
#include "core/recipe/validate.h"
#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::recipe;
using fp8rl::test::TempDir;

namespace {
std::vector<std::string> valid() {
  return {"model.init_preset=tiny", "data.synthetic_task=addition", "reward.type=synthetic"};
}
hf::ModelShape check(std::vector<std::string> extra) {
  auto o = valid();
  o.insert(o.end(), extra.begin(), extra.end());
  return validate_recipe(load_defaults(o));
}
}  // namespace

TEST_CASE("strict YAML: an indented first line does not drop the rest of the file", "[recipe][adversarial]") {
  TempDir dir;
  auto path = dir.write("r.yaml", "  rollout:\n    n: 3\ntrainer:\n  lr: 1e-6\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(path), ConfigError, path + ":3: a second YAML document starts here");
}

TEST_CASE("strict YAML: exactly one document", "[recipe][adversarial]") {
  TempDir dir;
  auto path = dir.write("r.yaml", "rollout:\n  n: 3\n---\nrollout:\n  n: 4\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(path), ConfigError, path + ":3: a second YAML document");  // at the ---
  // An explicit document start and end around one document is fine.
  auto one = dir.write("one.yaml", "---\nrollout:\n  n: 3\n...\n");
  CHECK(load_recipe(one).recipe.rollout.n == 3);
  REQUIRE_THROWS_CONTAINING(load_defaults({"rollout.n=3\n---\n4"}), ConfigError, "second YAML document");
}

TEST_CASE("strict YAML: duplicate keys and sections name both lines", "[recipe][adversarial]") {
  TempDir dir;
  auto keys = dir.write("k.yaml", "rollout:\n  n: 3\n  n: 4\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(keys), ConfigError, keys + ":3: duplicate key 'n' (first set at line 2)");
  auto sections = dir.write("s.yaml", "rollout:\n  n: 3\ntrainer:\n  lr: 1\nrollout:\n  top_k: 4\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(sections), ConfigError, sections + ":5: duplicate key 'rollout'");
  auto nested = dir.write("n.yaml", "quantization:\n  modules_in_bf16: [{a: 1, a: 2}]\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(nested), ConfigError, "duplicate key 'a'");
}

TEST_CASE("strict YAML: keys must be scalars", "[recipe][adversarial]") {
  TempDir dir;
  auto list_key = dir.write("l.yaml", "[a, b]: 1\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(list_key), ConfigError, list_key + ":1: a key must be a plain name, got a list");
  auto map_key = dir.write("m.yaml", "rollout:\n  ? {n: 1}\n  : 2\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(map_key), ConfigError, "a key must be a plain name, got a map");
}

TEST_CASE("base: chains are bounded and a missing base names who referred to it", "[recipe][adversarial]") {
  TempDir dir;
  const int n = 200;
  for (int i = 0; i < n; ++i) dir.write("b" + std::to_string(i) + ".yaml", "base: b" + std::to_string(i + 1) + ".yaml\n");
  dir.write("b" + std::to_string(n) + ".yaml", "rollout:\n  n: 2\n");
  REQUIRE_THROWS_CONTAINING(load_recipe((dir.path() / "b0.yaml").string()), ConfigError, "chain is more than 32 files deep");
  auto r = dir.write("r.yaml", "rollout:\n  n: 2\nbase: gone.yaml\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(r), ConfigError, "gone.yaml: no such recipe file (named by base: at " + r + ":3)");
  std::filesystem::create_directories(dir.path() / "d.yaml");
  auto d = dir.write("d-ref.yaml", "base: d.yaml\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(d), ConfigError, "not a regular file");
  // A symlink loop exists but cannot be read: said as such, not as a missing file.
  std::filesystem::create_symlink(dir.path() / "loop2.yaml", dir.path() / "loop1.yaml");
  std::filesystem::create_symlink(dir.path() / "loop1.yaml", dir.path() / "loop2.yaml");
  REQUIRE_THROWS_CONTAINING(load_recipe((dir.path() / "loop1.yaml").string()), ConfigError,
                            "loop1.yaml: cannot read the recipe file: Too many levels of symbolic links");
}

TEST_CASE("integers near 2^63 cannot wrap the BF16 layer sum", "[validate][adversarial]") {
  REQUIRE_THROWS_CONTAINING(check({"quantization.num_first_layers_in_bf16=9223372036854775807",
                                   "quantization.num_last_layers_in_bf16=2"}),
                            ConfigError, "exceeds the model's 4 decoder layers");
  REQUIRE_THROWS_CONTAINING(check({"quantization.num_first_layers_in_bf16=2",
                                   "quantization.num_last_layers_in_bf16=9223372036854775807"}),
                            ConfigError, "exceeds the model's 4 decoder layers");
  REQUIRE_THROWS_CONTAINING(check({"quantization.num_first_layers_in_bf16=9223372036854775808"}), ConfigError,
                            "expected an integer");
}

TEST_CASE("model.tokenizer_path and the resume path are checked", "[validate][adversarial]") {
  TempDir dir;
  auto file = dir.write("f.txt", "x");
  REQUIRE_THROWS_CONTAINING(check({"model.tokenizer_path=/no/such/tok"}), ConfigError, "model.tokenizer_path: no such file");
  REQUIRE_THROWS_CONTAINING(check({"model.tokenizer_path=" + file}), ConfigError, "is not a directory");
  REQUIRE_THROWS_CONTAINING(check({"model.tokenizer_path=" + dir.path().string()}), ConfigError, "holds no tokenizer.json");
  dir.write("tok/tokenizer.json", "{}");
  check({"model.tokenizer_path=" + (dir.path() / "tok").string()});
  REQUIRE_THROWS_CONTAINING(check({"checkpoint.resume_mode=resume_path", "checkpoint.resume_from_path=" + file}),
                            ConfigError, "is not a directory (a checkpoint directory)");
  check({"checkpoint.resume_mode=resume_path", "checkpoint.resume_from_path=" + dir.path().string()});
  REQUIRE_THROWS_CONTAINING(check({"model.init_preset=", "model.path=" + file}), ConfigError, "is not a directory");
}

TEST_CASE("reward patterns compile on PCRE2 with bounded length and nesting", "[validate][adversarial]") {
  TempDir dir;
  const std::string data = dir.write("train.jsonl", "{}\n");
  auto with = [&](const std::string& pattern) {
    return validate_recipe(load_defaults(
        {"model.init_preset=tiny", "data.train_files=" + data, "reward.type=regex", "reward.pattern=" + pattern}));
  };
  with("^\\d+$");
  REQUIRE_THROWS_CONTAINING(with("(ab"), ConfigError, "reward.pattern: PCRE2: not a valid regex");
  // Deep nesting and very long patterns are refused, not a stack overflow.
  REQUIRE_THROWS_CONTAINING(with(std::string(50000, '(') + std::string(50000, ')')), ConfigError, "reward.pattern");
  REQUIRE_THROWS_CONTAINING(with(std::string(100, '(') + "a" + std::string(100, ')')), ConfigError,
                            "parentheses are too deeply nested");
  REQUIRE_THROWS_CONTAINING(with(std::string(40000, 'a')), ConfigError, "at most 4096 are allowed");
}

TEST_CASE("one_line escapes control characters and bounds the length of an error", "[error][adversarial]") {
  using namespace std::string_literals;
  CHECK(one_line("a\nb\r\tc\0d\x1b[31m\x7f"s) == "a\\nb\\r\\tc\\0d\\x1b[31m\\x7f");
  CHECK(one_line("caf\xc3\xa9 \\n") == "caf\xc3\xa9 \\n");  // UTF-8 and backslashes stay
  const std::string cut = one_line(std::string(5000, 'x'), 100);
  CHECK(cut == std::string(100, 'x') + "... (4900 more bytes)");
  // Never cut inside a UTF-8 sequence.
  const std::string e = one_line("xx\xc3\xa9\xc3\xa9", 3);
  CHECK(e == "xx... (4 more bytes)");
  CHECK(one_line(std::string(1000, '\n')).size() <= kMaxErrorBytes + 32);
}

TEST_CASE("floats print in their shortest round-trip form", "[recipe][adversarial]") {
  LoadedRecipe r = load_defaults({"rollout.gpu_memory_utilization=0.6", "trainer.lr=1e-6", "rollout.temperature=1"});
  const std::string yaml = to_yaml(r, false);
  CHECK(yaml.find("gpu_memory_utilization: 0.6\n") != std::string::npos);
  CHECK(yaml.find("lr: 1e-06\n") != std::string::npos);
  CHECK(yaml.find("temperature: 1.0\n") != std::string::npos);
  CHECK(yaml.find("0.59999") == std::string::npos);
  CHECK(describe_keys().find("99999") == std::string::npos);
  // What is printed reads back as the same values.
  TempDir dir;
  LoadedRecipe back = load_recipe(dir.write("resolved.yaml", yaml));
  CHECK(back.recipe.rollout.gpu_memory_utilization == 0.6);
  CHECK(back.recipe.trainer.lr == 1e-6);
}

TEST_CASE("a value left unset is blamed on the recipe, resume_path on the key that chose it", "[validate][adversarial]") {
  TempDir dir;
  auto empty = dir.write("empty.yaml", "");
  REQUIRE_THROWS_CONTAINING(validate_recipe(load_recipe(empty)), ConfigError, empty + ": model.path: set exactly one of");
  REQUIRE_THROWS_CONTAINING(check({"checkpoint.resume_mode=resume_path"}), ConfigError,
                            "command line 'checkpoint.resume_mode=resume_path': checkpoint.resume_mode: resume_path needs");
}

TEST_CASE("a stray ',' at the top level is a syntax error, not an endless stream of documents", "[recipe][adversarial]") {
  // yaml-cpp 0.7's LoadAll never returns on these (it reads empty documents forever).
  REQUIRE_THROWS_CONTAINING(load_defaults({"rollout.n=,"}), ConfigError, "YAML syntax error: unexpected ','");
  TempDir dir;
  auto path = dir.write("r.yaml", ",[a]\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(path), ConfigError, path + ":1:1: YAML syntax error");
}

TEST_CASE("aliases cannot make a small recipe walk without end", "[recipe][adversarial]") {
  TempDir dir;
  std::string text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 20; ++i) {
    text += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) text += (k ? ", *a" : "*a") + std::to_string(i - 1);
    text += "]\n";
  }
  REQUIRE_THROWS_CONTAINING(load_recipe(dir.write("laughs.yaml", text)), ConfigError, "more than 100000 YAML values");
}

TEST_CASE("errors are escaped when they are made: a NUL or a newline in a key cannot cut or split them", "[error][adversarial]") {
  using namespace std::string_literals;
  CHECK(std::string(ConfigError("key 'a\0b\nc' is unknown"s).what()) == "key 'a\\0b\\nc' is unknown");
  CHECK(std::string(RuntimeFailure("x\ny").what()) == "x\\ny");
  TempDir dir;
  auto path = dir.write("r.yaml", "rollout:\n  \"n\\0x\\ny\": 3\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(path), ConfigError, "unknown key 'rollout.n\\0x\\ny'");
}

TEST_CASE("a long override is clipped in messages without splitting a UTF-8 character", "[recipe][adversarial]") {
  std::string value;
  for (int i = 0; i < 100; ++i) value += "\xc3\xa9";  // é
  try {
    load_defaults({"rollout.nnn=" + value});  // 12 bytes, so byte 117 is inside an é
    FAIL("expected ConfigError");
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    CHECK(what.find("...': unknown key 'rollout.nnn'") != std::string::npos);
    CHECK(what.find("rollout.nnn=\xc3\xa9") != std::string::npos);
    CHECK(what.find("\xc3...") == std::string::npos);  // no lead byte left without its continuation
  }
}
