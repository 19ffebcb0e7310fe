// Atomic file writes: a crash or a full disk leaves either the old file or the new one, never
// half of one.
#pragma once

#include <filesystem>
#include <string_view>

namespace fp8rl {

// Writes `content` to `path` via a temporary file in the same directory, fsync and rename.
// Throws RuntimeFailure naming the file when any step fails (the old file is then untouched), and
// before anything is written when `path` exists and is not a regular file (a directory, a FIFO,
// a device: the rename would replace it).
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

// That `path` can take an output file: its directory exists and is writable, and the path is
// not a directory or a special file (a FIFO, a device such as /dev/full: a rename would replace
// it with a regular file). Throws ConfigError "<what> '<path>': <reason>" (a bad path is the
// user's to fix, exit 2). Commands call it before their work, so nothing is lost at the end.
void check_output_file(const std::filesystem::path& path, std::string_view what);

}  // namespace fp8rl
