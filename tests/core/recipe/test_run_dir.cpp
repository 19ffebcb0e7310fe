// Run directories: created, finished work never overwritten unless resuming, atomic writes.
#include <fstream>
#include <sstream>

#include "core/util/error.h"
#include "core/recipe/run_dir.h"
#include "core/util/atomic_file.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::recipe;
using fp8rl::test::TempDir;

namespace {
std::string read(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST_CASE("the run directory is output_dir/experiment_name, or the recipe's stem", "[run_dir]") {
  TempDir dir;
  auto recipe = dir.write("my-recipe.yaml", "trainer:\n  output_dir: " + dir.path().string() + "/runs\n");
  LoadedRecipe r = load_recipe(recipe);
  CHECK(run_dir_path(r) == dir.path() / "runs" / "my-recipe");
  r = load_recipe(recipe, {"trainer.experiment_name=exp1"});
  CHECK(run_dir_path(r) == dir.path() / "runs" / "exp1");
}

TEST_CASE("a run directory with finished work is only reopened when resuming", "[run_dir]") {
  TempDir dir;
  LoadedRecipe r = load_defaults({"trainer.output_dir=" + dir.path().string(), "trainer.experiment_name=x"});
  auto run = open_run_dir(r);
  CHECK(std::filesystem::is_directory(run));
  CHECK(open_run_dir(r) == run);  // nothing finished yet: fine to start again
  // What a run that failed during setup leaves (an empty metrics.jsonl, an empty checkpoints
  // directory) is no finished work either.
  std::ofstream(run / kMetricsFile).flush();
  std::filesystem::create_directories(run / kCheckpointsDir);
  CHECK(open_run_dir(r) == run);
  std::ofstream(run / kMetricsFile) << "{}\n";
  REQUIRE_THROWS_CONTAINING(open_run_dir(r), ConfigError, "already holds a run");
  LoadedRecipe resume = load_defaults({"trainer.output_dir=" + dir.path().string(), "trainer.experiment_name=x",
                                       "checkpoint.resume_mode=auto"});
  CHECK(open_run_dir(resume) == run);
  CHECK(read(run / kMetricsFile) == "{}\n");  // untouched
}

TEST_CASE("atomic writes replace whole files and leave no temporary behind", "[run_dir]") {
  TempDir dir;
  auto p = dir.path() / "f.yaml";
  write_file_atomic(p, "one");
  write_file_atomic(p, "two");
  CHECK(read(p) == "two");
  CHECK_FALSE(std::filesystem::exists(dir.path() / "f.yaml.tmp"));
  REQUIRE_THROWS_AS(write_file_atomic(dir.path() / "no" / "dir" / "f", "x"), RuntimeFailure);
}
