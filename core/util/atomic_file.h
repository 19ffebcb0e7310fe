// Atomic file writes: a crash or a full disk leaves either the old file or the new one, never
// half of one.
#pragma once

#include <filesystem>
#include <string_view>

namespace fp8rl {

// Writes `content` to `path` via a temporary file in the same directory, fsync and rename.
// Throws RuntimeFailure naming the file when any step fails (the old file is then untouched).
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

}  // namespace fp8rl
