// The metrics log (trainer/metrics_log.h): metrics.jsonl lines, its truncation on resume (a
// resumed run's file equals an uninterrupted run's), TensorBoard event files read back with a
// small TFRecord + protobuf reader written here, the progress line; and CRC-32C
// (core/util/crc32c.h), which the event files and the checkpoint manifests use.
//
// FP8RL_TB_OUT=<dir>: the test "metrics log: TensorBoard read-back fixture" writes its run
// directory there, with expected.json, for tests/trainer/read_tensorboard.py to read back with
// TensorBoard's own loader.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/util/crc32c.h"
#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/metrics_log.h"

using namespace fp8rl;
using namespace fp8rl::trainer;
namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Bit-at-a-time CRC-32C: the definition, to check the sliced tables against.
uint32_t crc32c_reference(const std::string& s) {
  uint32_t c = 0xffffffffu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

// ---- a minimal TFRecord + protobuf reader ------------------------------------------------

template <class T>
T load(const std::string& b, size_t pos) {
  T v;
  std::memcpy(&v, b.data() + pos, sizeof(T));
  return v;
}

// The records of a TFRecord file; checks every length and both CRCs.
std::vector<std::string> read_records(const std::string& bytes) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < bytes.size();) {
    REQUIRE(bytes.size() - pos >= 12);
    const auto len = load<uint64_t>(bytes, pos);
    CHECK(load<uint32_t>(bytes, pos + 8) == crc32c_mask(crc32c(bytes.data() + pos, 8)));
    REQUIRE(bytes.size() - pos - 12 >= len + 4);
    std::string data = bytes.substr(pos + 12, len);
    CHECK(load<uint32_t>(bytes, pos + 12 + len) == crc32c_mask(crc32c(data)));
    out.push_back(std::move(data));
    pos += 12 + len + 4;
  }
  return out;
}

struct Field {
  int number, wire;
  uint64_t bits = 0;  // varint, fixed64 or fixed32
  std::string bytes;  // length-delimited
};

std::vector<Field> parse_fields(const std::string& b) {
  std::vector<Field> out;
  size_t pos = 0;
  const auto varint = [&] {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(pos < b.size());
      const auto c = static_cast<uint8_t>(b[pos++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
  };
  while (pos < b.size()) {
    const uint64_t key = varint();
    Field f{static_cast<int>(key >> 3), static_cast<int>(key & 7), 0, {}};
    const size_t n = f.wire == 1 ? 8 : f.wire == 5 ? 4 : 0;
    if (f.wire == 0)
      f.bits = varint();
    else if (n > 0) {
      REQUIRE(pos + n <= b.size());
      std::memcpy(&f.bits, b.data() + pos, n);
      pos += n;
    } else {
      REQUIRE(f.wire == 2);
      const size_t len = varint();
      REQUIRE(pos + len <= b.size());
      f.bytes = b.substr(pos, len);
      pos += len;
    }
    out.push_back(std::move(f));
  }
  return out;
}

struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<std::pair<std::string, float>> scalars;
  int64_t session_status = -1;
};

Event decode_event(const std::string& bytes) {
  Event e;
  for (const Field& f : parse_fields(bytes)) {
    if (f.number == 1) std::memcpy(&e.wall_time, &f.bits, 8);
    if (f.number == 2) e.step = static_cast<int64_t>(f.bits);
    if (f.number == 3) e.file_version = f.bytes;
    if (f.number == 7)
      for (const Field& s : parse_fields(f.bytes))
        if (s.number == 1) e.session_status = static_cast<int64_t>(s.bits);
    if (f.number == 5)
      for (const Field& v : parse_fields(f.bytes)) {
        REQUIRE(v.number == 1);
        std::pair<std::string, float> scalar;
        for (const Field& x : parse_fields(v.bytes)) {
          if (x.number == 1) scalar.first = x.bytes;
          if (x.number == 2) std::memcpy(&scalar.second, &x.bits, 4);
        }
        e.scalars.push_back(scalar);
      }
  }
  return e;
}

std::vector<fs::path> event_files(const fs::path& run_dir) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(run_dir / kTensorBoardDir)) out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<Event> read_events(const fs::path& file) {
  std::vector<Event> out;
  for (const std::string& r : read_records(test::read_file(file))) out.push_back(decode_event(r));
  return out;
}

using Metrics = std::vector<std::pair<std::string, double>>;

Metrics metrics_of_step(int64_t step) {
  return {{"reward/mean", 0.25 * static_cast<double>(step)}, {"rollout_corr/kl", 1e-3 / static_cast<double>(step)}};
}

}  // namespace

TEST_CASE("crc32c: known vectors, incremental use, awkward lengths, the TFRecord mask", "[util][crc32c]") {
  CHECK(crc32c(std::string("123456789")) == 0xE3069283u);
  CHECK(crc32c(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(crc32c(std::string(32, '\xff')) == 0x62A8AB43u);
  CHECK(crc32c(nullptr, 0) == 0u);
  std::string data;
  for (int i = 0; i < 5137; ++i) data.push_back(static_cast<char>((i * 131 + 7) % 251));
  for (size_t n : {1, 7, 8, 9, 17, 1025, 5137}) CHECK(crc32c(data.data(), n) == crc32c_reference(data.substr(0, n)));
  for (size_t split : {0, 1, 5, 8, 13, 4096, 5137})
    CHECK(crc32c(data.data() + split, data.size() - split, crc32c(data.data(), split)) == crc32c(data));
  CHECK(crc32c_mask(0) == 0xa282ead8u);
  CHECK(crc32c_mask(0x80000000u) == 0xa282ead8u + (1u << 16));
}

TEST_CASE("metrics log: one JSON line per step, in the given order, non-finite values as null", "[trainer][metrics]") {
  test::TempDir dir;
  {
    MetricsLog log(dir.path(), {"console", "jsonl"});
    log.log(1, {{"reward/mean", 0.41}, {"loss", -2.5}, {"acc", 1.0}});
    log.log(2, {{"reward/mean", kNaN}, {"loss", kInf}, {"grad_norm", 3}});
    log.log(3, {});
    CHECK(log.event_file().empty());
  }
  CHECK(test::read_file(dir.path() / "metrics.jsonl") ==
        "{\"step\":1,\"reward/mean\":0.41,\"loss\":-2.5,\"acc\":1.0}\n"
        "{\"step\":2,\"reward/mean\":null,\"loss\":null,\"grad_norm\":3.0}\n"
        "{\"step\":3}\n");
  CHECK_FALSE(fs::exists(dir.path() / kTensorBoardDir));
}

TEST_CASE("metrics log: without the jsonl logger no metrics.jsonl is written", "[trainer][metrics]") {
  test::TempDir dir;
  MetricsLog(dir.path(), {"console"}).log(1, {{"x", 1}});
  CHECK_FALSE(fs::exists(dir.path() / "metrics.jsonl"));
}

TEST_CASE("metrics log: a resumed run's metrics.jsonl equals an uninterrupted run's", "[trainer][metrics]") {
  test::TempDir straight, resumed;
  {
    MetricsLog log(straight.path(), {"jsonl"});
    for (int64_t s = 1; s <= 5; ++s) log.log(s, metrics_of_step(s));
  }
  {
    MetricsLog log(resumed.path(), {"jsonl"});
    for (int64_t s = 1; s <= 4; ++s) log.log(s, metrics_of_step(s));
  }
  // The crash: step 5's line half written. The checkpoint the run resumes from is step 2.
  std::ofstream(resumed.path() / "metrics.jsonl", std::ios::app) << "{\"step\":5,\"reward/me";
  {
    MetricsLog log(resumed.path(), {"jsonl"}, 2);
    CHECK(test::read_file(resumed.path() / "metrics.jsonl").find("\"step\":3") == std::string::npos);
    for (int64_t s = 3; s <= 5; ++s) log.log(s, metrics_of_step(s));
  }
  CHECK(test::read_file(resumed.path() / "metrics.jsonl") == test::read_file(straight.path() / "metrics.jsonl"));

  SECTION("resume at step 0 keeps nothing, and a missing file is fine") {
    MetricsLog(resumed.path(), {"jsonl"}, 0);
    CHECK(test::read_file(resumed.path() / "metrics.jsonl").empty());
    test::TempDir empty;
    MetricsLog(empty.path(), {"console"}, 7);
    CHECK_FALSE(fs::exists(empty.path() / "metrics.jsonl"));
  }
}

// resume auto with no checkpoint to resume from starts the run over in its directory: the old
// metrics.jsonl's steps are trained again, so they must not stay beside the new ones.
TEST_CASE("metrics log: a fresh start over an existing metrics.jsonl begins it anew", "[trainer][metrics]") {
  test::TempDir dir;
  dir.write("metrics.jsonl", "{\"step\":0,\"x\":1}\n{\"step\":1,\"x\":2}\n{\"step\":2,\"x");
  {
    MetricsLog log(dir.path(), {"jsonl"});
    log.log(0, {{"x", 5}});
  }
  CHECK(test::read_file(dir.path() / "metrics.jsonl") == "{\"step\":0,\"x\":5.0}\n");
}

TEST_CASE("metrics log: a damaged line before the end stops the resume with file:line", "[trainer][metrics]") {
  test::TempDir dir;
  dir.write("metrics.jsonl", "{\"step\":1,\"x\":1}\n\n[1,2]\n{\"step\":2}\n");
  REQUIRE_THROWS_CONTAINING(MetricsLog(dir.path(), {"jsonl"}, 1), ConfigError,
                            "metrics.jsonl:3: not a JSON object with an integer \"step\"");
  REQUIRE_THROWS_CONTAINING(MetricsLog(dir.path(), {"jsonl", "wandb"}), ConfigError,
                            "logging.logger: unknown logger 'wandb'");
}

TEST_CASE("metrics log: a write that fails (disk full) is a RuntimeFailure naming the file", "[trainer][metrics]") {
  if (!fs::exists("/dev/full")) SKIP_TEST("no /dev/full here");
  test::TempDir dir;
  fs::create_symlink("/dev/full", dir.path() / "metrics.jsonl");
  MetricsLog log(dir.path(), {"jsonl"});
  REQUIRE_THROWS_CONTAINING(log.log(1, {{"x", 1}}), RuntimeFailure,
                            "cannot write " + (dir.path() / "metrics.jsonl").string());
}

TEST_CASE("metrics log: TensorBoard event file framing, Events and a resume's new file", "[trainer][metrics]") {
  test::TempDir dir;
  {
    MetricsLog log(dir.path(), {"tensorboard"});
    REQUIRE(log.event_file().parent_path() == dir.path() / kTensorBoardDir);
    for (int64_t s = 1; s <= 3; ++s) log.log(s, metrics_of_step(s));
  }
  CHECK_FALSE(fs::exists(dir.path() / "metrics.jsonl"));
  {
    MetricsLog log(dir.path(), {"tensorboard"}, 1);
    log.log(2, {{"reward/mean", 7.0}});
  }
  const std::vector<fs::path> files = event_files(dir.path());
  REQUIRE(files.size() == 2);
  const std::string name = files[0].filename().string();
  CHECK(name.starts_with("events.out.tfevents."));
  CHECK(name.ends_with(".fp8rl"));

  const std::vector<Event> first = read_events(files[0]);
  REQUIRE(first.size() == 2 + 3 * 2);
  CHECK(first[0].file_version == "brain.Event:2");
  CHECK(first[1].session_status == 1);  // START: the first in the run is not a restart
  CHECK(first[1].step == 0);
  CHECK(first[0].wall_time > 1.6e9);
  for (int64_t s = 1; s <= 3; ++s) {
    const Metrics m = metrics_of_step(s);
    for (size_t i = 0; i < 2; ++i) {
      const Event& e = first[static_cast<size_t>(2 + (s - 1) * 2) + i];
      CHECK(e.step == s);
      REQUIRE(e.scalars.size() == 1);
      CHECK(e.scalars[0].first == m[i].first);
      CHECK(e.scalars[0].second == static_cast<float>(m[i].second));
    }
  }
  // The resumed segment: its own file, a SessionLog START at resume_step + 1, then its steps.
  const std::vector<Event> second = read_events(files[1]);
  REQUIRE(second.size() == 3);
  CHECK(second[0].file_version == "brain.Event:2");
  CHECK(second[1].session_status == 1);
  CHECK(second[1].step == 2);
  CHECK(second[2].step == 2);
  CHECK(second[2].scalars == std::vector<std::pair<std::string, float>>{{"reward/mean", 7.0f}});
}

TEST_CASE("metrics log: TensorBoard read-back fixture", "[trainer][metrics]") {
  // A run of steps 1-4, resumed from step 2 and run to step 5 with other values: TensorBoard
  // must show steps 1-2 of the first segment and 3-5 of the second. One value is NaN.
  test::TempDir tmp;
  const char* out_env = std::getenv("FP8RL_TB_OUT");
  const fs::path run_dir = out_env && *out_env ? fs::path(out_env) : tmp.path();
  fs::remove_all(run_dir / kTensorBoardDir);
  fs::create_directories(run_dir);
  const auto value = [](int64_t step, int segment) { return segment * 10.0 + 0.1 * static_cast<double>(step); };
  nlohmann::json expected = {{"files", 2},
                             {"scalars", {{"reward/mean", nlohmann::json::array()}, {"kl", nlohmann::json::array()}}}};
  for (int segment = 1; segment <= 2; ++segment) {
    MetricsLog log(run_dir, {"tensorboard"}, segment == 1 ? -1 : 2);
    for (int64_t s = segment == 1 ? 1 : 3; s <= (segment == 1 ? 4 : 5); ++s) {
      const double kl = s == 5 ? kNaN : value(s, segment) / 100;
      log.log(s, {{"reward/mean", value(s, segment)}, {"kl", kl}});
      if (segment == 2 || s <= 2) {
        expected["scalars"]["reward/mean"].push_back({s, value(s, segment)});
        expected["scalars"]["kl"].push_back({s, std::isnan(kl) ? nlohmann::json(nullptr) : nlohmann::json(kl)});
      }
    }
  }
  std::ofstream(run_dir / "expected.json") << expected.dump(1) << "\n";
  const std::vector<fs::path> files = event_files(run_dir);
  REQUIRE(files.size() == 2);
  CHECK(read_events(files[0]).size() == 2 + 4 * 2);
  CHECK(read_events(files[1]).size() == 2 + 3 * 2);
}

TEST_CASE("metrics log: the progress line", "[trainer][metrics]") {
  Progress p;
  p.step = 12;
  p.total_steps = 100;
  p.reward = 0.41;
  p.accuracy = 0.38;
  p.response_length = 9.2;
  p.tokens_per_s = 1234.4;
  p.seconds_per_step = 3.1;
  CHECK(progress_line(p) ==
        "step 12/100 | reward 0.41 | acc 0.38 | resp_len 9.2 | 1234 tok/s | 3.1 s/step | ETA 4m33s");

  Progress q;  // nothing known but the step
  q.step = 5;
  CHECK(progress_line(q) == "step 5");
  q.reward = -0.5;
  q.response_length = 123.456;
  q.seconds_per_step = 0.04567;
  CHECK(progress_line(q) == "step 5 | reward -0.5 | resp_len 123 | 0.0457 s/step");
  q.total_steps = 5;
  CHECK(progress_line(q) == "step 5/5 | reward -0.5 | resp_len 123 | 0.0457 s/step | ETA 0s");
  q.step = 0;
  q.total_steps = 1000;
  q.seconds_per_step = 3.7;
  CHECK(progress_line(q).ends_with("| 3.7 s/step | ETA 1h01m40s"));
  q.seconds_per_step = 0.045;
  CHECK(progress_line(q).ends_with("| ETA 45s"));
  q.reward = 99.96;
  q.response_length = 12.345;
  CHECK(progress_line(q).starts_with("step 0/1000 | reward 100 | resp_len 12.3 |"));
}
