// The checkpoint store (trainer/checkpoint_store.h): commit, list and prune; verification that
// names the damaged file (a flipped byte, a truncated or missing file, no manifest); resume's
// fallback to the previous good checkpoint; staging and stale directories; and a child process
// killed with SIGKILL mid-commit, again and again, never leaving the last checkpoint damaged.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/checkpoint_store.h"

using namespace fp8rl;
using namespace fp8rl::trainer;
namespace fs = std::filesystem;

namespace {

// The files a trainer would write for `step`: weights, a nested optimizer state, a JSON.
void write_checkpoint_files(const fs::path& staging, int64_t step, size_t weight_bytes = 4096) {
  std::string weights(weight_bytes, '\0');
  for (size_t i = 0; i < weights.size(); ++i)
    weights[i] = static_cast<char>((i * 31 + static_cast<size_t>(step)) % 256);
  std::ofstream(staging / "model.safetensors", std::ios::binary) << weights;
  fs::create_directories(staging / "optim");
  std::ofstream(staging / "optim" / "adam.bin", std::ios::binary) << "moments of step " << step;
  std::ofstream(staging / "trainer_state.json") << "{\"step\": " << step << "}";
}

fs::path commit_step(const CheckpointStore& store, int64_t step) {
  const fs::path staging = store.begin(step);
  write_checkpoint_files(staging, step);
  return store.commit(staging, step);
}

std::vector<std::string> names(const std::vector<fs::path>& paths) {
  std::vector<std::string> out;
  for (const fs::path& p : paths) out.push_back(p.filename().string());
  return out;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

void overwrite_byte(const fs::path& file, std::streamoff at) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  const char c = static_cast<char>(f.get());
  f.seekp(at);
  f.put(static_cast<char>(c ^ 0x01));
}

}  // namespace

TEST_CASE("checkpoint store: commit writes the manifest, list is oldest first, prune keeps max_keep",
          "[trainer][checkpoint]") {
  test::TempDir run;
  const CheckpointStore store(run.path(), 2);
  CHECK(store.list().empty());
  CHECK_FALSE(store.latest_good().has_value());

  const fs::path first = commit_step(store, 10);
  CHECK(first == run.path() / "checkpoints" / "step_00000010");
  CHECK(entries(first) ==
        std::vector<std::string>{"manifest.json", "model.safetensors", "optim", "trainer_state.json"});
  const auto manifest = nlohmann::json::parse(test::read_file(first / "manifest.json"));
  CHECK(manifest["step"] == 10);
  CHECK(manifest["complete"] == true);
  CHECK(manifest["files"].size() == 3);
  CHECK(manifest["files"]["model.safetensors"]["bytes"] == 4096);
  CHECK(manifest["files"]["optim/adam.bin"]["bytes"] == std::string("moments of step 10").size());
  CHECK(manifest["files"]["trainer_state.json"]["crc32c"].get<std::string>().size() == 8);
  CHECK(verify_checkpoint(first) == 10);
  CHECK(verify_checkpoint(first.string() + "/") == 10);

  commit_step(store, 20);
  commit_step(store, 100);  // ordered by step, not by name length or time
  commit_step(store, 30);
  // Prune keeps the max_keep newest by step plus never drops the checkpoint just committed.
  CHECK(names(store.list()) == std::vector<std::string>{"step_00000030", "step_00000100"});
  CHECK(entries(store.dir()) == std::vector<std::string>{"step_00000030", "step_00000100"});
  CHECK(store.latest_good() == store.dir() / "step_00000100");

  SECTION("max_keep 0 keeps all") {
    const CheckpointStore keep_all(run.path(), 0);
    commit_step(keep_all, 40);
    commit_step(keep_all, 50);
    CHECK(keep_all.list().size() == 4);
  }
  SECTION("committing a step again replaces it") {
    const fs::path staging = store.begin(100);
    std::ofstream(staging / "other.bin") << "new";
    const fs::path replaced = store.commit(staging, 100);
    CHECK(entries(replaced) == std::vector<std::string>{"manifest.json", "other.bin"});
    CHECK(verify_checkpoint(replaced) == 100);
    CHECK(entries(store.dir()) == std::vector<std::string>{"step_00000030", "step_00000100"});
  }
}

TEST_CASE("checkpoint store: staging and manifest-less directories are never listed", "[trainer][checkpoint]") {
  test::TempDir run;
  const CheckpointStore store(run.path(), 0);
  commit_step(store, 1);
  const fs::path staging = store.begin(2);
  write_checkpoint_files(staging, 2);
  fs::create_directories(store.dir() / "step_00000003");  // a directory someone made by hand
  std::ofstream(store.dir() / "step_00000004") << "a file";
  fs::create_directories(store.dir() / "step_x5");
  CHECK(names(store.list()) == std::vector<std::string>{"step_00000001"});

  std::vector<std::string> skipped;
  CHECK(store.latest_good(&skipped) == store.dir() / "step_00000001");
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0].find("step_00000003: no manifest.json") != std::string::npos);

  // A staging directory, even one with a manifest (a crash just before the rename), is refused.
  REQUIRE_THROWS_CONTAINING(verify_checkpoint(staging), ConfigError, "a checkpoint that was never committed");
  // begin() again for the same step starts from an empty directory.
  CHECK(fs::is_empty(store.begin(2)));
}

TEST_CASE("checkpoint store: verify names the file that does not match", "[trainer][checkpoint]") {
  test::TempDir run;
  const CheckpointStore store(run.path(), 0);
  const fs::path ckpt = commit_step(store, 7);
  const std::string expected = "; expected a complete fp8rl checkpoint (";

  SECTION("a flipped byte") {
    overwrite_byte(ckpt / "model.safetensors", 1000);
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError, ckpt.string() + ": model.safetensors is corrupted");
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError, expected);
  }
  SECTION("a truncated file") {
    fs::resize_file(ckpt / "optim" / "adam.bin", 3);
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError,
                              "optim/adam.bin has 3 bytes, manifest.json says 17");
  }
  SECTION("a missing file") {
    fs::remove(ckpt / "trainer_state.json");
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError, "trainer_state.json is missing");
  }
  SECTION("a missing manifest") {
    fs::remove(ckpt / "manifest.json");
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError, ckpt.string() + ": no manifest.json");
    CHECK(store.list().empty());
  }
  SECTION("a manifest that is not ours") {
    std::ofstream(ckpt / "manifest.json")
        << "{\"step\": 7, \"files\": {\"../x\": {\"bytes\": 1, \"crc32c\": \"0\"}}, \"complete\": true}";
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError, "manifest.json lists '../x', not a path inside");
    std::ofstream(ckpt / "manifest.json") << "{\"step\": 7, \"files\": {}}";
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError, "does not say \"complete\": true");
    std::ofstream(ckpt / "manifest.json") << "{\"step\": 8, \"files\": {}, \"complete\": true}";
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError, "manifest.json says step 8");
    std::ofstream(ckpt / "manifest.json") << "not json";
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(ckpt), ConfigError, "manifest.json is not a JSON object");
  }
  SECTION("a regular file, a missing path") {
    const std::string file = run.write("model.safetensors", "weights");
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(file), ConfigError, file + ": not a directory" + expected);
    REQUIRE_THROWS_CONTAINING(verify_checkpoint(run.path() / "nope"), ConfigError, "nope: no such directory");
  }
}

TEST_CASE("checkpoint store: latest_good falls back to the previous good checkpoint", "[trainer][checkpoint]") {
  test::TempDir run;
  const CheckpointStore store(run.path(), 3);
  commit_step(store, 1);
  commit_step(store, 2);
  const fs::path newest = commit_step(store, 3);
  overwrite_byte(newest / "optim" / "adam.bin", 0);
  std::vector<std::string> skipped;
  CHECK(store.latest_good(&skipped) == store.dir() / "step_00000002");
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0].find(newest.string() + ": optim/adam.bin is corrupted") != std::string::npos);
  CHECK(store.list().size() == 3);  // list() does not read checksums
}

TEST_CASE("checkpoint store: stale staging directories of dead processes are removed by commit",
          "[trainer][checkpoint]") {
  test::TempDir run;
  const CheckpointStore store(run.path(), 0);
  // pid 999999999 is above any pid_max; pid 1 is alive.
  fs::create_directories(store.dir() / ".tmp-step_00000005.999999999" / "sub");
  fs::create_directories(store.dir() / ".del-step_00000004.999999999");
  fs::create_directories(store.dir() / ".tmp-step_00000005.1");
  commit_step(store, 6);
  CHECK(entries(store.dir()) == std::vector<std::string>{".tmp-step_00000005.1", "step_00000006"});
}

TEST_CASE("checkpoint store: SIGKILL at any moment leaves the last complete checkpoint intact",
          "[trainer][checkpoint]") {
  // A child commits checkpoints in a loop (max_keep 2, so every commit also prunes) and is
  // killed at a random moment; every listed checkpoint must then verify. (SIGKILL keeps the
  // page cache: this checks the order of renames, not the fsyncs.)
  test::TempDir run;
  std::mt19937 rng(1234);
  int64_t next_step = 1;
  int interrupted = 0;  // rounds whose kill left the child's staging directory behind
  for (int round = 0; round < 12; ++round) {
    const int64_t first_step = next_step;
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      try {
        const CheckpointStore store(run.path(), 2);
        for (int64_t s = first_step;; ++s) {
          const fs::path staging = store.begin(s);
          write_checkpoint_files(staging, s, 64 * 1024);
          store.commit(staging, s);
        }
      } catch (...) {
      }
      ::_exit(3);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(5000, 100000)(rng)));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(WIFSIGNALED(status));

    const CheckpointStore store(run.path(), 2);
    std::string child_suffix = ".";
    child_suffix += std::to_string(child);
    if (fs::exists(store.dir()))
      for (const std::string& name : entries(store.dir()))
        if (name.starts_with(".tmp-step_") && name.ends_with(child_suffix)) ++interrupted;
    for (const fs::path& p : store.list()) CHECK_NOTHROW(verify_checkpoint(p));
    if (!store.list().empty()) {
      CHECK(store.latest_good() == store.list().back());
      next_step = verify_checkpoint(store.list().back()) + 1;
    }
  }
  INFO("SIGKILL test: " << next_step - 1 << " checkpoints committed, " << interrupted << " kills mid-checkpoint");
  CHECK(next_step > 6);  // the children got work done between the kills
  // The parent's own commit clears whatever the killed children left half-done.
  const CheckpointStore store(run.path(), 2);
  commit_step(store, next_step);
  for (const std::string& name : entries(store.dir())) CHECK(name.starts_with("step_"));
  CHECK(store.list().size() <= 2);
}

// Resuming at an older step abandons the later checkpoints: they are moved aside, whole and never
// deleted, so neither resume auto nor pruning sees them again, and the new history's checkpoints
// are the ones kept.
TEST_CASE("checkpoint store: checkpoints after a resumed step are set aside, not deleted", "[trainer][checkpoint]") {
  test::TempDir run;
  const CheckpointStore store(run.path(), 3);
  for (int64_t s : {10, 20, 30}) commit_step(store, s);
  fs::create_directories(store.dir() / checkpoint_dir_name(40));  // a step_* directory without manifest
  const fs::path aside = store.set_aside_after(10);
  REQUIRE_FALSE(aside.empty());
  CHECK(aside.filename().string().rfind("superseded_after_step_00000010.", 0) == 0);
  CHECK(names(store.list()) == std::vector<std::string>{"step_00000010"});
  CHECK(entries(aside) == std::vector<std::string>{"step_00000020", "step_00000030", "step_00000040"});
  CHECK(verify_checkpoint(aside / "step_00000030") == 30);  // moved whole
  // The new branch: its checkpoints are the ones kept and resumed from.
  for (int64_t s : {11, 12, 13}) commit_step(store, s);
  CHECK(names(store.list()) == std::vector<std::string>{"step_00000011", "step_00000012", "step_00000013"});
  CHECK(store.latest_good()->filename() == "step_00000013");
  CHECK(fs::exists(aside / "step_00000030"));  // pruning never reaches it
  CHECK(store.set_aside_after(13).empty());    // nothing later: nothing moved
}
