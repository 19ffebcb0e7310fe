#include "trainer/checkpoint_store.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/recipe/run_dir.h"
#include "core/util/atomic_file.h"
#include "core/util/crc32c.h"
#include "core/util/error.h"
#include "core/util/log.h"

namespace fs = std::filesystem;

namespace fp8rl::trainer {

namespace {

using ordered_json = nlohmann::ordered_json;

constexpr const char* kExpected =
    "expected a complete fp8rl checkpoint (a step directory whose manifest.json, written when the checkpoint was "
    "committed, lists the size and CRC-32C of every file)";
constexpr const char* kStagingPrefix = ".tmp-";   // being written
constexpr const char* kDeletingPrefix = ".del-";  // being removed (pruned or replaced)

std::string errno_text(const std::string& what, const fs::path& p) {
  return what + " " + p.string() + ": " + std::strerror(errno);
}

// The step of a "step_<digits>" name.
std::optional<int64_t> parse_step_name(const std::string& name) {
  constexpr std::string_view prefix = "step_";
  if (!name.starts_with(prefix) || name.size() == prefix.size() || name.size() > prefix.size() + 18)
    return std::nullopt;
  int64_t step = 0;
  for (char c : name.substr(prefix.size())) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

void fsync_path(const fs::path& p, bool is_dir) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | (is_dir ? O_DIRECTORY : 0));
  if (fd < 0) throw RuntimeFailure(errno_text("cannot open", p));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  errno = err;
  if (rc != 0) throw RuntimeFailure(errno_text("cannot fsync", p));
}

struct FileSum {
  uint64_t bytes = 0;
  uint32_t crc = 0;
};

// One sequential read: size and CRC-32C; with `sync` the file is fsynced too (commit).
FileSum sum_file(const fs::path& p, bool sync) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw RuntimeFailure(errno_text("cannot read", p));
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<char> buf(size_t{4} << 20);
  FileSum s;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      errno = err;
      throw RuntimeFailure(errno_text("cannot read", p));
    }
    s.crc = crc32c(buf.data(), static_cast<size_t>(n), s.crc);
    s.bytes += static_cast<uint64_t>(n);
  }
  const bool synced = !sync || ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  errno = err;
  if (!synced) throw RuntimeFailure(errno_text("cannot fsync", p));
  return s;
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

struct StepDir {
  int64_t step;
  fs::path path;
  bool has_manifest;
};

// Every step_<digits> directory in `dir`, oldest first.
std::vector<StepDir> step_dirs(const fs::path& dir) {
  std::vector<StepDir> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto step = parse_step_name(it->path().filename().string());
    std::error_code ec2;
    if (step && it->is_directory(ec2))
      out.push_back({*step, it->path(), fs::is_regular_file(it->path() / kManifestFile, ec2)});
  }
  std::sort(out.begin(), out.end(), [](const StepDir& a, const StepDir& b) { return a.step < b.step; });
  return out;
}

// Removes a checkpoint so that it is never seen half-deleted: renamed out of the listing first.
void remove_checkpoint(const fs::path& dir, const fs::path& checkpoint) {
  const fs::path doomed = dir / (kDeletingPrefix + checkpoint.filename().string() + "." + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(doomed, ec);
  fs::rename(checkpoint, doomed, ec);
  if (!ec) fs::remove_all(doomed, ec);
  if (ec) log::warn("checkpoint store: cannot remove " + checkpoint.string() + ": " + ec.message());
}

// .tmp-/.del- directories whose process is gone: what a crash during begin/commit/prune left.
void remove_stale(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(kStagingPrefix) && !name.starts_with(kDeletingPrefix)) continue;
    const std::string pid_text = name.substr(name.rfind('.') + 1);
    if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) stale.push_back(it->path());
  }
  for (const fs::path& p : stale) {
    fs::remove_all(p, ec);
    if (ec) log::warn("checkpoint store: cannot remove stale " + p.string() + ": " + ec.message());
  }
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

CheckpointStore::CheckpointStore(fs::path run_dir, int64_t max_keep)
    : dir_(std::move(run_dir) / recipe::kCheckpointsDir), max_keep_(max_keep) {
  FP8RL_CHECK(max_keep >= 0, "max_keep must be >= 0 (0 keeps all)");
}

fs::path CheckpointStore::begin(int64_t step) const {
  FP8RL_CHECK(step >= 0, "checkpoint step must be >= 0");
  const fs::path staging = dir_ / (kStagingPrefix + checkpoint_dir_name(step) + "." + std::to_string(::getpid()));
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (!ec) fs::remove_all(staging, ec);
  if (!ec) fs::create_directory(staging, ec);
  if (ec) throw RuntimeFailure("cannot create " + staging.string() + ": " + ec.message());
  return staging;
}

fs::path CheckpointStore::commit(const fs::path& staging, int64_t step) const {
  FP8RL_CHECK(!fs::exists(staging / kManifestFile), "manifest.json is the store's; the trainer must not write it");
  // 1. Every file's bytes on disk, with its size and CRC; the directory entries too (below).
  std::vector<std::pair<std::string, FileSum>> files;
  std::vector<fs::path> dirs{staging};
  std::error_code ec;
  for (fs::recursive_directory_iterator it(staging, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::file_status st = it->symlink_status(ec);
    if (ec) break;
    if (fs::is_directory(st))
      dirs.push_back(it->path());
    else if (fs::is_regular_file(st))
      files.emplace_back(it->path().lexically_relative(staging).generic_string(), sum_file(it->path(), true));
    else
      throw RuntimeFailure(it->path().string() + ": not a regular file or a directory; a checkpoint holds only files");
  }
  if (ec) throw RuntimeFailure("cannot list " + staging.string() + ": " + ec.message());
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

  // 2. The manifest, last: its presence means every byte above is on disk.
  ordered_json manifest;
  manifest["step"] = step;
  manifest["files"] = ordered_json::object();
  for (const auto& [name, sum] : files) manifest["files"][name] = {{"bytes", sum.bytes}, {"crc32c", hex32(sum.crc)}};
  manifest["complete"] = true;
  write_file_atomic(staging / kManifestFile,
                    manifest.dump(2, ' ', false, ordered_json::error_handler_t::replace) + "\n");
  for (const fs::path& d : dirs) fsync_path(d, true);

  // 3. Publish with one rename. An existing checkpoint of this step is swapped out atomically
  // (staging then holds the old one) or, where the filesystem cannot swap, renamed away first.
  const fs::path final_path = dir_ / checkpoint_dir_name(step);
  if (::rename(staging.c_str(), final_path.c_str()) != 0) {
    if (errno != EEXIST && errno != ENOTEMPTY)
      throw RuntimeFailure(errno_text("cannot rename " + staging.string() + " to", final_path));
    fs::path old = staging;
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_path.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        throw RuntimeFailure(errno_text("cannot swap " + staging.string() + " with", final_path));
      old = dir_ / (kDeletingPrefix + final_path.filename().string() + "." + std::to_string(::getpid()));
      fs::remove_all(old, ec);
      if (::rename(final_path.c_str(), old.c_str()) != 0) throw RuntimeFailure(errno_text("cannot rename", final_path));
      if (::rename(staging.c_str(), final_path.c_str()) != 0)
        throw RuntimeFailure(errno_text("cannot rename " + staging.string() + " to", final_path));
    }
    fsync_path(dir_, true);
    fs::remove_all(old, ec);
    if (ec) log::warn("checkpoint store: cannot remove the replaced " + old.string() + ": " + ec.message());
  }
  fsync_path(dir_, true);
  fsync_path(dir_.parent_path(), true);  // the run dir's entry for checkpoints/, made by begin()

  // 4. Only now prune: oldest first, never the checkpoint just committed.
  if (max_keep_ > 0) {
    std::vector<fs::path> older = list();
    std::erase(older, final_path);
    for (int64_t i = 0, n = static_cast<int64_t>(older.size()) + 1 - max_keep_; i < n; ++i)
      remove_checkpoint(dir_, older[static_cast<size_t>(i)]);
  }
  remove_stale(dir_);
  return final_path;
}

std::vector<fs::path> CheckpointStore::list() const {
  std::vector<fs::path> out;
  for (const StepDir& d : step_dirs(dir_))
    if (d.has_manifest) out.push_back(d.path);
  return out;
}

fs::path CheckpointStore::set_aside_after(int64_t step) const {
  std::vector<StepDir> later = step_dirs(dir_);
  std::erase_if(later, [&](const StepDir& d) { return d.step <= step; });
  if (later.empty()) return {};
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const fs::path aside = dir_ / ("superseded_after_" + checkpoint_dir_name(step) + "." + std::to_string(now));
  std::error_code ec;
  fs::create_directory(aside, ec);
  if (ec) throw RuntimeFailure("cannot create " + aside.string() + ": " + ec.message());
  for (const StepDir& d : later) {
    fs::rename(d.path, aside / d.path.filename(), ec);
    if (ec) throw RuntimeFailure("cannot move " + d.path.string() + " to " + aside.string() + ": " + ec.message());
  }
  fsync_path(aside, true);
  fsync_path(dir_, true);
  return aside;
}

std::optional<fs::path> CheckpointStore::latest_good(std::vector<std::string>* skipped) const {
  const std::vector<StepDir> dirs = step_dirs(dir_);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    try {
      verify_checkpoint(it->path);
      return it->path;
    } catch (const ConfigError& e) {
      if (skipped) skipped->push_back(e.what());
    }
  }
  return std::nullopt;
}

int64_t verify_checkpoint(const fs::path& path) {
  const fs::path dir = path.has_filename() ? path : path.parent_path();  // "step_00000010/"
  const auto fail = [&](const std::string& what) { throw ConfigError(dir.string() + ": " + what + "; " + kExpected); };
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) fail("no such directory");
  if (!fs::is_directory(st)) fail("not a directory");
  const std::string name = dir.filename().string();
  if (name.starts_with(kStagingPrefix)) fail("a checkpoint that was never committed (a staging directory)");
  if (name.starts_with(kDeletingPrefix)) fail("a checkpoint being deleted");
  const fs::path manifest_path = dir / kManifestFile;
  if (!fs::is_regular_file(manifest_path, ec)) fail("no manifest.json (never completed, or not an fp8rl checkpoint)");

  std::ifstream in(manifest_path, std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  const auto m = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const auto bad_manifest = [&](const std::string& why) { fail("manifest.json " + why); };
  if (!m.is_object()) bad_manifest("is not a JSON object");
  if (!m.contains("step") || !m["step"].is_number_integer()) bad_manifest("has no integer \"step\"");
  if (const auto c = m.find("complete"); c == m.end() || *c != true) bad_manifest("does not say \"complete\": true");
  if (!m.contains("files") || !m["files"].is_object()) bad_manifest("has no \"files\" object");
  const int64_t step = m["step"].get<int64_t>();
  if (const auto named = parse_step_name(name); named && *named != step)
    bad_manifest("says step " + std::to_string(step) + ", the directory name another");

  // Sizes first (cheap: a truncated or missing file is found without reading gigabytes), then CRCs.
  struct Expect {
    std::string name;
    uint64_t bytes;
    std::string crc;
  };
  std::vector<Expect> expect;
  for (const auto& [file, entry] : m["files"].items()) {
    const fs::path rel(file);
    const bool inside = !file.empty() && rel.is_relative() &&
                        std::none_of(rel.begin(), rel.end(), [](const fs::path& part) { return part == ".."; });
    if (!inside) bad_manifest("lists '" + file + "', not a path inside the checkpoint");
    if (!entry.is_object() || !entry.contains("bytes") || !entry["bytes"].is_number_unsigned() ||
        !entry.contains("crc32c") || !entry["crc32c"].is_string())
      bad_manifest("entry '" + file + "' is not {\"bytes\": n, \"crc32c\": \"hex\"}");
    expect.push_back({file, entry["bytes"].get<uint64_t>(), entry["crc32c"].get<std::string>()});
    const fs::path p = dir / rel;
    if (!fs::is_regular_file(p, ec)) fail(file + " is missing (listed in manifest.json)");
    const uint64_t size = fs::file_size(p, ec);
    if (ec) fail("cannot stat " + file + ": " + ec.message());
    if (size != expect.back().bytes)
      fail(file + " has " + std::to_string(size) + " bytes, manifest.json says " + std::to_string(expect.back().bytes) +
           " (truncated or rewritten)");
  }
  for (const Expect& e : expect) {
    FileSum sum;
    try {
      sum = sum_file(dir / e.name, false);
    } catch (const RuntimeFailure& err) {
      fail(err.what());
    }
    if (hex32(sum.crc) != e.crc)
      fail(e.name + " is corrupted: its CRC-32C is " + hex32(sum.crc) + ", manifest.json says " + e.crc);
  }
  return step;
}

}  // namespace fp8rl::trainer
