#include "core/run_dir.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "core/error.h"

namespace fs = std::filesystem;

namespace fp8rl {

fs::path run_dir_path(const LoadedRecipe& loaded) {
  const TrainerConfig& t = loaded.recipe.trainer;
  std::string name = t.experiment_name;
  if (name.empty()) name = loaded.path.empty() ? std::string("run") : fs::path(loaded.path).stem().string();
  return fs::path(t.output_dir) / name;
}

fs::path open_run_dir(const LoadedRecipe& loaded) {
  const fs::path dir = run_dir_path(loaded);
  std::error_code ec;
  const bool has_work = fs::exists(dir / kCheckpointsDir, ec) || fs::exists(dir / kMetricsFile, ec);
  if (has_work && loaded.recipe.checkpoint.resume_mode == "disable")
    throw ConfigError(fmt::format(
        "{}: run directory {} already holds a run (checkpoints or metrics); continue it with --resume auto, or choose another "
        "trainer.experiment_name",
        loaded.where("checkpoint.resume_mode"), dir.string()));
  fs::create_directories(dir, ec);
  if (ec) throw RuntimeFailure(fmt::format("cannot create run directory {}: {}", dir.string(), ec.message()));
  return dir;
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  const fs::path tmp = path.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw RuntimeFailure(fmt::format("cannot write {}: {}", tmp.string(), std::strerror(errno)));
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      throw RuntimeFailure(fmt::format("cannot write {}: {}", tmp.string(), std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw RuntimeFailure(fmt::format("cannot flush {}: {}", tmp.string(), std::strerror(errno)));
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw RuntimeFailure(fmt::format("cannot rename {} to {}: {}", tmp.string(), path.string(), ec.message()));
}

}  // namespace fp8rl
