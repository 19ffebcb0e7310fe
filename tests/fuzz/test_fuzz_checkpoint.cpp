// Fuzz: a checkpoint's manifest.json (trainer/checkpoint_store.h), what `--resume PATH` and
// `--resume auto` read first, issue 13. A real checkpoint is committed once; each input replaces
// its manifest, and verify_checkpoint must accept it only when it still describes the files
// (size and CRC-32C), or refuse it with one line. Seeded, bounded: a few seconds.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz.h"
#include "tests/test_util.h"
#include "trainer/checkpoint_store.h"

using namespace fp8rl;
namespace fs = std::filesystem;

TEST_CASE("fuzz: checkpoint manifests are verified without crash, hang or a stray exception", "[fuzz][checkpoint]") {
  test::TempDir run;
  const trainer::CheckpointStore store(run.path(), 0);
  const fs::path staging = store.begin(7);
  std::ofstream(staging / "policy.safetensors") << std::string(100, 'w');
  fs::create_directories(staging / "state");
  std::ofstream(staging / "state" / "rng.json") << "{\"seed\": 1}";
  const fs::path ckpt = store.commit(staging, 7);
  REQUIRE(trainer::verify_checkpoint(ckpt) == 7);
  std::stringstream manifest;
  manifest << std::ifstream(ckpt / trainer::kManifestFile).rdbuf();

  const std::vector<std::string> corpus = {manifest.str()};
  const std::vector<std::string> dict = {"{", "}", "[", "]", "\"", ":", ",", "null", "-1", "1e400", "18446744073709551616",
                                         "\"step\": ", "\"files\": ", "\"size\": ", "\"crc32c\": ", "\"../x\"",
                                         "\"/etc/passwd\"", "\"state/rng.json\"", "\"\\u0000\"", "\xff"};
  const fuzz::Stats st = fuzz::run(corpus, dict, 3107, 5000, 501, 3.0, [&](const std::string& text) {
    std::ofstream(ckpt / trainer::kManifestFile, std::ios::binary | std::ios::trunc) << text;
    // Accepted: it still names this checkpoint's step (a plain exception, so that a wrong step
    // is reported through the harness with the input, as a contract failure).
    const int64_t step = trainer::verify_checkpoint(ckpt);
    if (step != 7) throw std::logic_error("verify_checkpoint accepted a manifest of step " + std::to_string(step));
  });
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 501);
  CHECK(st.accepted > 0);  // the unmutated-enough manifests still verify
}
