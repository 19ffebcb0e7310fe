#include "core/util/atomic_file.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "core/util/error.h"

namespace fs = std::filesystem;

namespace fp8rl {

void check_output_file(const fs::path& path, std::string_view what) {
  std::error_code ec;
  const fs::path parent = fs::absolute(path, ec).parent_path();
  const fs::file_status st = fs::status(path, ec);
  if (fs::exists(st)) {
    if (fs::is_directory(st)) throw ConfigError(fmt::format("{} '{}': is a directory; expected a file name", what, path.string()));
    if (!fs::is_regular_file(st))
      throw ConfigError(fmt::format("{} '{}': exists and is not a regular file (a FIFO or device); refusing to replace it",
                                    what, path.string()));
  }
  if (!fs::is_directory(parent, ec))
    throw ConfigError(fmt::format("{} '{}': the directory '{}' does not exist", what, path.string(), parent.string()));
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    throw ConfigError(fmt::format("{} '{}': the directory '{}' is not writable: {}", what, path.string(), parent.string(),
                                  std::strerror(errno)));
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  {  // a rename would replace a directory's entry or a FIFO/device with a regular file
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (fs::exists(st) && !fs::is_regular_file(st))
      throw RuntimeFailure(fmt::format("cannot write {}: it exists and is not a regular file", path.string()));
  }
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
