// Small string helpers shared by the recipe loader and the CLI.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fp8rl {

// Levenshtein distance (insert, delete, substitute all cost 1).
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word` if it is close enough to be a plausible typo
// (distance <= max(1, |word|/3)), for "did you mean" hints.
std::optional<std::string> closest_match(std::string_view word, const std::vector<std::string>& candidates);

std::string join(const std::vector<std::string>& parts, std::string_view sep);

// A library's message without its leading tag: "[json.exception.parse_error.101] parse error at
// line 1" -> "parse error at line 1" (users get the reason, not the library's error id).
std::string_view without_library_tag(std::string_view what);

}  // namespace fp8rl
