#include "trainer/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/recipe/run_dir.h"
#include "core/util/atomic_file.h"
#include "core/util/crc32c.h"
#include "core/util/error.h"

namespace fs = std::filesystem;

namespace fp8rl::trainer {

namespace {

using ordered_json = nlohmann::ordered_json;

void write_all(int fd, std::string_view bytes, const fs::path& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw RuntimeFailure("cannot write " + path.string() + ": " + std::strerror(n < 0 ? errno : ENOSPC));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

void sync(int fd, const fs::path& path) {
  // EINVAL: a file that cannot be synced (a pipe, /dev/null); its data went where it goes.
  if (::fdatasync(fd) != 0 && errno != EINVAL)
    throw RuntimeFailure("cannot flush " + path.string() + ": " + std::strerror(errno));
}

// A new file's directory entry, so that a power cut does not lose the file itself.
void sync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw RuntimeFailure("cannot open " + dir.string() + ": " + std::strerror(errno));
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc != 0) throw RuntimeFailure("cannot flush " + dir.string() + ": " + std::strerror(err));
}

// The step of one metrics.jsonl line; ConfigError when the line is not one of ours.
int64_t step_of(std::string_view line, const fs::path& path, int line_no) {
  const auto j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  const auto s = j.is_object() ? j.find("step") : j.end();
  if (!j.is_object() || s == j.end() || !s->is_number_integer())
    throw ConfigError(path.string() + ":" + std::to_string(line_no) +
                      ": not a JSON object with an integer \"step\"; expected fp8rl's metrics log (one "
                      "{\"step\": ..., \"<metric>\": ...} object per line). Fix or delete the line to resume");
  return s->get<int64_t>();
}

// Keeps the complete lines of `path` with step <= resume_step. The last line without '\n' is
// what a crash left mid-write: dropped too.
void drop_steps_after(const fs::path& path, int64_t resume_step) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  std::ifstream in(path, std::ios::binary);
  std::string text{std::istreambuf_iterator<char>(in), {}};
  if (!in.good() && !in.eof()) throw RuntimeFailure("cannot read " + path.string());
  std::string kept;
  int line_no = 0;
  for (size_t pos = 0, nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    ++line_no;
    const std::string_view line(text.data() + pos, nl - pos);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    if (step_of(line, path, line_no) <= resume_step) kept.append(line).push_back('\n');
  }
  if (kept != text) write_file_atomic(path, kept);
}

// ---- TensorBoard: protobuf wire format and TFRecord framing ------------------------------

void put_varint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>(v | 0x80));
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, int field, int wire_type) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | wire_type);
}
template <class T>
void put_fixed(std::string& out, T v) {  // little-endian, as protobuf and TFRecord store it
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void put_bytes(std::string& out, int field, std::string_view bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// Event { double wall_time = 1; int64 step = 2; oneof what { string file_version = 3;
//         Summary summary = 5; SessionLog session_log = 7; ... } }
std::string event_head(double wall_time, int64_t step) {
  std::string e;
  put_key(e, 1, 1);
  put_fixed(e, wall_time);
  put_key(e, 2, 0);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

// Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
std::string scalar_event(double wall_time, int64_t step, std::string_view tag, double value) {
  std::string v;
  put_bytes(v, 1, tag);
  put_key(v, 2, 5);
  put_fixed(v, static_cast<float>(value));
  std::string summary;
  put_bytes(summary, 1, v);
  std::string e = event_head(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

// SessionLog { SessionStatus status = 1; } with START = 1, at the start of every event file:
// a START after the first one is a restart, and TensorBoard drops the points it has read at
// steps >= `step` (both of its loaders; the newer one ignores a run's first START).
std::string session_start_event(double wall_time, int64_t step) {
  std::string log;
  put_key(log, 1, 0);
  put_varint(log, 1);
  std::string e = event_head(wall_time, step);
  put_bytes(e, 7, log);
  return e;
}

// TFRecord: uint64 length, masked crc32c(length), data, masked crc32c(data).
void put_record(std::string& out, std::string_view data) {
  const size_t start = out.size();
  put_fixed(out, static_cast<uint64_t>(data.size()));
  put_fixed(out, crc32c_mask(crc32c(out.data() + start, 8)));
  out.append(data);
  put_fixed(out, crc32c_mask(crc32c(data)));
}

double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  std::string h = buf;
  for (char& c : h)
    if (c == '/' || static_cast<unsigned char>(c) < 0x20) c = '_';
  return h;
}

// A new event file events.out.tfevents.<unix time>.<host>.fp8rl. TensorBoard reads a
// directory's files in name order; a name taken (a resume within the same second) moves the
// time on by a second, so the newer file still sorts last.
int open_event_file(const fs::path& dir, fs::path& path) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw RuntimeFailure("cannot create " + dir.string() + ": " + ec.message());
  const std::string host = host_name();
  for (auto t = static_cast<int64_t>(unix_time());; ++t) {
    path = dir / ("events.out.tfevents." + std::to_string(t) + "." + host + ".fp8rl");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) return fd;
    if (errno != EEXIST) throw RuntimeFailure("cannot create " + path.string() + ": " + std::strerror(errno));
  }
}

}  // namespace

MetricsLog::MetricsLog(const fs::path& run_dir, std::vector<std::string> loggers, int64_t resume_step) {
  bool jsonl = false, tensorboard = false;
  for (const std::string& l : loggers) {
    if (l == "jsonl")
      jsonl = true;
    else if (l == "tensorboard")
      tensorboard = true;
    else if (l != "console")
      throw ConfigError("logging.logger: unknown logger '" + l + "'; expected console, jsonl or tensorboard");
  }
  const fs::path jsonl_path = run_dir / recipe::kMetricsFile;
  if (resume_step >= 0) drop_steps_after(jsonl_path, resume_step);
  try {
    if (jsonl) {
      jsonl_path_ = jsonl_path;
      // A fresh start (resume_step < 0) in a run directory that holds a metrics.jsonl -- resume
      // auto with no checkpoint to resume from -- empties it: those steps are trained again.
      const int fresh = resume_step < 0 ? O_TRUNC : 0;
      jsonl_fd_ = ::open(jsonl_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | fresh, 0644);
      if (jsonl_fd_ < 0) throw RuntimeFailure("cannot open " + jsonl_path_.string() + ": " + std::strerror(errno));
      sync_dir(run_dir);
    }
    if (tensorboard) {
      event_fd_ = open_event_file(run_dir / kTensorBoardDir, event_path_);
      const double t = unix_time();
      std::string head = event_head(t, 0);
      put_bytes(head, 3, "brain.Event:2");
      std::string records;
      put_record(records, head);
      put_record(records, session_start_event(t, std::max<int64_t>(resume_step, -1) + 1));
      write_all(event_fd_, records, event_path_);
      sync(event_fd_, event_path_);
      sync_dir(event_path_.parent_path());
    }
  } catch (...) {
    if (jsonl_fd_ >= 0) ::close(jsonl_fd_);
    if (event_fd_ >= 0) ::close(event_fd_);
    throw;
  }
}

MetricsLog::~MetricsLog() {
  if (jsonl_fd_ >= 0) ::close(jsonl_fd_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

void MetricsLog::log(int64_t step, const std::vector<std::pair<std::string, double>>& metrics) {
  ordered_json line;
  line["step"] = step;
  for (const auto& [name, value] : metrics)
    line[name] = std::isfinite(value) ? ordered_json(value) : ordered_json(nullptr);
  FP8RL_CHECK(line.size() == metrics.size() + 1, "metric names must be unique and not \"step\"");
  if (jsonl_fd_ >= 0) {
    write_all(jsonl_fd_, line.dump(-1, ' ', false, ordered_json::error_handler_t::replace) + "\n", jsonl_path_);
    sync(jsonl_fd_, jsonl_path_);
  }
  if (event_fd_ >= 0) {
    const double t = unix_time();
    std::string records;
    for (const auto& [name, value] : metrics) put_record(records, scalar_event(t, step, name, value));
    write_all(event_fd_, records, event_path_);
    sync(event_fd_, event_path_);
  }
}

void MetricsLog::flush() {
  if (jsonl_fd_ >= 0) sync(jsonl_fd_, jsonl_path_);
  if (event_fd_ >= 0) sync(event_fd_, event_path_);
}

// ---- progress line -------------------------------------------------------------------------

namespace {

// 3 significant digits, whole numbers from 100 up: 0.41, 9.2, 12.3, 1234.
std::string compact(double x) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), std::isfinite(x) && std::fabs(x) >= 100 ? "%.0f" : "%.3g", x);
  return buf;
}

// 45s, 4m32s, 1h02m03s.
std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  char buf[64];
  if (s < 60)
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm%02llds", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

}  // namespace

std::string progress_line(const Progress& p) {
  std::string out = "step " + std::to_string(p.step);
  if (p.total_steps > 0) out.append("/").append(std::to_string(p.total_steps));
  const auto field = [&](double v, const char* before, const char* after) {
    if (!std::isnan(v)) out.append(" | ").append(before).append(compact(v)).append(after);
  };
  field(p.reward, "reward ", "");
  field(p.accuracy, "acc ", "");
  field(p.response_length, "resp_len ", "");
  field(p.tokens_per_s, "", " tok/s");
  field(p.seconds_per_step, "", " s/step");
  if (p.total_steps > 0 && std::isfinite(p.seconds_per_step)) {
    const auto left = static_cast<double>(std::max<int64_t>(0, p.total_steps - p.step));
    out.append(" | ETA ").append(duration(left * p.seconds_per_step));
  }
  return out;
}

}  // namespace fp8rl::trainer
