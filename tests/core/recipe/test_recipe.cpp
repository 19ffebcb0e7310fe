// Recipe loading: YAML, base extension, overrides, unknown keys, types, choices, printing.
#include "core/util/error.h"
#include "core/recipe/load.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::recipe;
using fp8rl::test::TempDir;

TEST_CASE("defaults load and every section is printed", "[recipe]") {
  LoadedRecipe r = load_defaults();
  CHECK(r.recipe.rollout.n == 8);
  CHECK(r.recipe.quantization.weight_block_size == std::vector<int64_t>{128, 128});
  CHECK(r.sources.empty());
  std::string yaml = to_yaml(r, false);
  for (const char* s : {"model:", "quantization:", "lora:", "rollout:", "algorithm:", "data:", "reward:", "trainer:",
                        "logging:", "checkpoint:"})
    CHECK(yaml.find(s) != std::string::npos);
}

TEST_CASE("a recipe file sets values and remembers file and line", "[recipe]") {
  TempDir dir;
  auto path = dir.write("r.yaml",
                        "rollout:\n"
                        "  n: 16\n"
                        "  temperature: 0.7\n"
                        "trainer:\n"
                        "  lr: 1e-6\n"
                        "algorithm:\n"
                        "  clip_ratio_c: 3\n"
                        "data:\n"
                        "  train_files: one.jsonl\n");
  LoadedRecipe r = load_recipe(path);
  CHECK(r.recipe.rollout.n == 16);
  CHECK(r.recipe.rollout.temperature == 0.7);
  CHECK(r.recipe.trainer.lr == 1e-6);
  REQUIRE(r.recipe.algorithm.clip_ratio_c.has_value());
  CHECK(*r.recipe.algorithm.clip_ratio_c == 3.0);
  CHECK(r.recipe.data.train_files == std::vector<std::string>{"one.jsonl"});  // scalar = one-element list
  CHECK(r.where("rollout.temperature") == path + ":3: rollout.temperature");
  CHECK(r.where("rollout.top_p") == "default: rollout.top_p");
}

TEST_CASE("dotted overrides win over the file and parse values as YAML", "[recipe]") {
  TempDir dir;
  auto path = dir.write("r.yaml", "trainer:\n  lr: 1e-5\n");
  LoadedRecipe r = load_recipe(path, {"trainer.lr=1e-6", "rollout.n=4", "quantization.weight_block_size=[64, 64]",
                                      "algorithm.clip_ratio_c=null", "trainer.experiment_name="});
  CHECK(r.recipe.trainer.lr == 1e-6);
  CHECK(r.recipe.rollout.n == 4);
  CHECK(r.recipe.quantization.weight_block_size == std::vector<int64_t>{64, 64});
  CHECK_FALSE(r.recipe.algorithm.clip_ratio_c.has_value());
  CHECK(r.recipe.trainer.experiment_name.empty());
  CHECK(r.where("trainer.lr") == "command line 'trainer.lr=1e-6': trainer.lr");
}

TEST_CASE("malformed overrides are config errors", "[recipe]") {
  REQUIRE_THROWS_CONTAINING(load_defaults({"trainer.lr"}), ConfigError, "section.key=value");
  REQUIRE_THROWS_CONTAINING(load_defaults({"lr=1"}), ConfigError, "section.key=value");
  REQUIRE_THROWS_CONTAINING(load_defaults({"a.b.c=1"}), ConfigError, "section.key=value");
  REQUIRE_THROWS_CONTAINING(load_defaults({"trainr.lr=1"}), ConfigError, "did you mean 'trainer'");
  REQUIRE_THROWS_CONTAINING(load_defaults({"trainer.lrr=1"}), ConfigError, "did you mean 'trainer.lr'");
  REQUIRE_THROWS_CONTAINING(load_defaults({"rollout.n=[1"}), ConfigError, "cannot parse the value");
}

TEST_CASE("a recipe extends its base key by key, and chains resolve relative to each file", "[recipe]") {
  TempDir dir;
  dir.write("base/fp8.yaml",
            "quantization:\n  quant_method: fp8\n  num_first_layers_in_bf16: 1\n"
            "rollout:\n  n: 16\n");
  dir.write("base/mid.yaml", "base: fp8.yaml\nrollout:\n  temperature: 0.9\n");
  auto path = dir.write("bf16.yaml", "base: base/mid.yaml\nquantization:\n  quant_method: none\n");
  LoadedRecipe r = load_recipe(path, {"rollout.n=2"});
  CHECK(r.recipe.quantization.quant_method == "none");          // child wins
  CHECK(r.recipe.quantization.num_first_layers_in_bf16 == 1);   // inherited from the grand-base
  CHECK(r.recipe.rollout.temperature == 0.9);                   // from the middle
  CHECK(r.recipe.rollout.n == 2);                               // override wins over everything
  REQUIRE(r.files.size() == 3);
  CHECK(r.files.front().find("fp8.yaml") != std::string::npos);  // base first
  CHECK(r.where("quantization.num_first_layers_in_bf16").find("fp8.yaml:3") != std::string::npos);
}

TEST_CASE("base cycles and missing bases are reported", "[recipe]") {
  TempDir dir;
  dir.write("a.yaml", "base: b.yaml\n");
  auto b = dir.write("b.yaml", "base: a.yaml\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(b), ConfigError, "cycle");
  auto c = dir.write("c.yaml", "base: nope.yaml\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(c), ConfigError, "nope.yaml: no such recipe file");
  auto d = dir.write("d.yaml", "base: [1, 2]\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(d), ConfigError, "d.yaml:1: base: expected the path");
}

TEST_CASE("unknown keys and sections name file, line and a suggestion", "[recipe]") {
  TempDir dir;
  auto p1 = dir.write("k.yaml", "trainer:\n  lr: 1e-6\n  weight_decy: 0.1\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(p1), ConfigError, "k.yaml:3: unknown key 'trainer.weight_decy' (did you mean 'trainer.weight_decay'?)");
  auto p2 = dir.write("s.yaml", "\nrolout:\n  n: 2\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(p2), ConfigError, "s.yaml:2: unknown section 'rolout' (did you mean 'rollout'?)");
  auto p3 = dir.write("m.yaml", "rollout:\n  lr: 1e-6\n");  // a key of another section
  REQUIRE_THROWS_CONTAINING(load_recipe(p3), ConfigError, "did you mean 'trainer.lr'?");
  auto p4 = dir.write("t.yaml", "lr: 1e-6\n");  // a key at top level
  REQUIRE_THROWS_CONTAINING(load_recipe(p4), ConfigError, "did you mean 'trainer.lr'?");
  auto p5 = dir.write("x.yaml", "rollout: 3\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(p5), ConfigError, "x.yaml:1: section 'rollout' must be a map");
}

TEST_CASE("wrong types name file, line, key and what was expected", "[recipe]") {
  TempDir dir;
  auto p = [&](const std::string& body) { return dir.write("t.yaml", body); };
  REQUIRE_THROWS_CONTAINING(load_recipe(p("rollout:\n  n: many\n")), ConfigError,
                            "t.yaml:2: rollout.n: expected an integer, got 'many'");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("rollout:\n  n: 2.5\n")), ConfigError, "expected an integer");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("trainer:\n  lr: fast\n")), ConfigError, "trainer.lr: expected a number");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("trainer:\n  lr: .nan\n")), ConfigError, "expected a finite number");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("lora:\n  target_modules: {a: 1}\n")), ConfigError,
                            "expected a list of strings, got a map");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("quantization:\n  weight_block_size: [128, x]\n")), ConfigError,
                            "quantization.weight_block_size: expected a list of integers, but element 2 is 'x'");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("rollout:\n  stop: [\"a\", null]\n")), ConfigError,
                            "t.yaml:2: rollout.stop: expected a list of strings, but element 2 is nothing (null)");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("rollout:\n  stop: [[a]]\n")), ConfigError,
                            "rollout.stop: expected a list of strings, but element 1 is a list");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("rollout:\n  enforce_eager: maybe\n")), ConfigError,
                            "expected true or false");
  REQUIRE_THROWS_CONTAINING(load_recipe(p("model:\n  path: [a]\n")), ConfigError, "expected a string, got a list");
}

TEST_CASE("enumerated keys list their valid values", "[recipe]") {
  REQUIRE_THROWS_CONTAINING(load_defaults({"algorithm.loss_agg_mode=token_mean"}), ConfigError,
                            "'token_mean' is not one of: token-mean, seq-mean-token-sum");
  REQUIRE_THROWS_CONTAINING(load_defaults({"algorithm.loss_agg_mode=token_mean"}), ConfigError,
                            "did you mean 'token-mean'");
  REQUIRE_THROWS_CONTAINING(load_defaults({"quantization.fmt=e4m4"}), ConfigError, "not one of: e4m3, e5m2");
}

TEST_CASE("a choice of auto, true and false takes YAML's bool spellings, as a bool key did", "[recipe]") {
  for (const auto& [spelling, want] : std::vector<std::pair<std::string, std::string>>{
           {"yes", "true"}, {"On", "true"}, {"TRUE", "true"}, {"no", "false"}, {"off", "false"}, {"auto", "auto"}}) {
    INFO(spelling);
    CHECK(load_defaults({"rollout.shared_prefix_decode=" + spelling}).recipe.rollout.shared_prefix_decode == want);
  }
  REQUIRE_THROWS_CONTAINING(load_defaults({"rollout.shared_prefix_decode=sometimes"}), ConfigError,
                            "'sometimes' is not one of: auto, true, false");
  // Other choices are left alone: "on" is no kv_cache_dtype.
  REQUIRE_THROWS_CONTAINING(load_defaults({"rollout.kv_cache_dtype=on"}), ConfigError, "'on' is not one of: auto, fp8");
}

TEST_CASE("YAML syntax errors name file, line and column", "[recipe]") {
  TempDir dir;
  auto path = dir.write("bad.yaml", "rollout:\n  n: [1, 2\n");
  REQUIRE_THROWS_CONTAINING(load_recipe(path), ConfigError, "bad.yaml:");
  REQUIRE_THROWS_CONTAINING(load_recipe(path), ConfigError, "YAML syntax error");
  REQUIRE_THROWS_CONTAINING(load_recipe(dir.write("list.yaml", "- a\n- b\n")), ConfigError,
                            "a recipe is a map of sections");
  REQUIRE_THROWS_CONTAINING(load_recipe((dir.path() / "missing.yaml").string()), ConfigError, "no such recipe file");
}

TEST_CASE("the printed recipe loads back to the same values", "[recipe]") {
  TempDir dir;
  LoadedRecipe a = load_defaults({"trainer.lr=3.3e-7", "rollout.n=5", "algorithm.clip_ratio_c=3.5",
                                  "data.train_files=[a.jsonl, 'b c.jsonl']", "model.path=some dir/x: y",
                                  "reward.pattern=^\\d+$"});
  auto path = dir.write("round.yaml", to_yaml(a, /*annotate=*/true));
  LoadedRecipe b = load_recipe(path);
  CHECK(to_yaml(b, false) == to_yaml(a, false));
  CHECK(b.recipe.trainer.lr == 3.3e-7);
  CHECK(b.recipe.model.path == "some dir/x: y");
  CHECK(b.recipe.reward.pattern == "^\\d+$");
}

TEST_CASE("every key is documented", "[recipe]") {
  auto keys = all_keys();
  CHECK(keys.size() > 60);
  std::string doc = describe_keys();
  for (const auto& k : keys) CHECK(doc.find(k) != std::string::npos);
}
