// Fuzz: recipe YAML files (with base: chains among the shipped recipes) and command-line
// overrides, through loading and validation (issue 13). Seeded, bounded: a few seconds each.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/recipe/load.h"
#include "core/recipe/validate.h"
#include "tests/fuzz/fuzz.h"
#include "tests/test_util.h"

using namespace fp8rl;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kYamlDict = {
    "base: ", "base: r.yaml\n", "base: quickstart-tiny.yaml\n", "---\n", "...\n", "  ", "? ", ": ", "&a ", "*a",
    "!!str ", "!!binary ", "<<: *a\n", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "1e400",
    ".nan", ".inf", "[", "{", "]", "}", "- ", "\t", "\"\\u0000\\n\"", "rollout:\n", "  n: ", "null", "~",
    "quantization:\n  num_first_layers_in_bf16: ", "reward:\n  type: regex\n  pattern: ", "(", "((((((((",
    "model:\n  path: ", "  tokenizer_path: .\n", "checkpoint:\n  resume_mode: resume_path\n", "a: &a [x, x, x]\nb: [*a, *a]\n",
    "\xef\xbb\xbf", "%YAML 1.2\n", "%TAG ! tag:x,2000:\n"};

}  // namespace

TEST_CASE("fuzz: recipe YAML files load and validate without crash, hang or a stray exception", "[fuzz][recipe_yaml]") {
  test::TempDir dir;
  std::vector<std::string> corpus;
  for (const auto& e : fs::directory_iterator(fs::path(FP8RL_TEST_DATA) / ".." / ".." / "recipes")) {
    if (e.path().extension() != ".yaml") continue;
    corpus.push_back(test::read_file(e.path()));
    fs::copy_file(e.path(), dir.path() / e.path().filename());  // so `base:` between them resolves
  }
  corpus.push_back("rollout:\n  n: 3\nalgorithm:\n  clip_ratio_c: 3.5\n");
  const std::string path = (dir.path() / "r.yaml").string();
  const fuzz::Stats st = fuzz::run(corpus, kYamlDict, 1301, 3000, 101, 4.0, [&](const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    recipe::validate_recipe(recipe::load_recipe(path));
  });
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 101);
  CHECK(st.by_code.count(2));
}

TEST_CASE("fuzz: command-line overrides load and validate without crash, hang or a stray exception", "[fuzz][overrides]") {
  const std::vector<std::string> corpus = {
      "rollout.n=8", "trainer.lr=1e-6", "quantization.weight_block_size=[128, 128]", "algorithm.clip_ratio_c=null",
      "model.init_preset=tiny", "quantization.modules_in_bf16=[\"*.down_proj\"]", "reward.pattern=^\\d+$",
      "data.train_files=[a.jsonl, b.jsonl]", "quantization.num_last_layers_in_bf16=2", "rollout.top_p=0.9"};
  const fuzz::Stats st = fuzz::run(corpus, kYamlDict, 1302, 3000, 101, 3.0, [&](const std::string& arg) {
    recipe::validate_recipe(
        recipe::load_defaults({"model.init_preset=tiny", "data.synthetic_task=addition", "reward.type=synthetic", arg}));
  });
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 101);
  CHECK(st.accepted > 0);
  CHECK(st.by_code.count(2));
}
