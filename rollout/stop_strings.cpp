#include "rollout/stop_strings.h"

#include <algorithm>

namespace fp8rl::rollout {

bool append_and_match_stop(std::string& window, std::string_view bytes, const std::vector<std::string>& stops) {
  if (stops.empty()) return false;
  window.append(bytes);
  size_t longest = 0;
  bool hit = false;
  for (const std::string& s : stops) {
    longest = std::max(longest, s.size());
    hit = hit || (!s.empty() && window.find(s) != std::string::npos);
  }
  const size_t keep = longest > 0 ? longest - 1 : 0;
  if (window.size() > keep) window.erase(0, window.size() - keep);
  return hit;
}

size_t stop_string_position(std::string_view text, const std::vector<std::string>& stops) {
  size_t best = text.size();
  for (const std::string& s : stops) {
    if (s.empty()) continue;
    const size_t at = text.find(s);
    if (at != std::string_view::npos) best = std::min(best, at);
  }
  return best;
}

}  // namespace fp8rl::rollout
