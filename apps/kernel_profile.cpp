#include "apps/kernel_profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <iomanip>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <vector>

namespace fp8rl {
namespace {

// Template arguments make kernel names hundreds of characters long; the table keeps the head.
std::string short_name(const std::string& name) {
  constexpr size_t kMax = 96;
  return name.size() <= kMax ? name : name.substr(0, kMax - 3) + "...";
}

}  // namespace

KernelProfile profile_kernels(const std::function<void()>& work, int64_t steps, int top) {
  namespace prof = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<ActivityType> activities{ActivityType::CUDA};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  try {
    work();
  } catch (...) {
    prof::disableProfiler();
    throw;
  }
  const std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();

  struct Sum {
    int64_t calls = 0;
    double ns = 0;
  };
  std::map<std::string, Sum> by_name;
  KernelProfile p;
  uint64_t first = std::numeric_limits<uint64_t>::max(), last = 0;
  for (const prof::KinetoEvent& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;  // host-side events (runtime calls, ops)
    Sum& s = by_name[e.name()];
    ++s.calls;
    s.ns += static_cast<double>(e.durationNs());
    p.busy_ms += static_cast<double>(e.durationNs()) / 1e6;
    first = std::min(first, e.startNs());
    last = std::max(last, e.endNs());
    ++p.activities;
  }
  if (p.activities > 0) p.span_ms = static_cast<double>(last - first) / 1e6;

  std::ostringstream t;
  t << std::fixed;
  if (p.activities == 0) {
    t << "(the profiler recorded no GPU activity: no CUPTI on this machine?)\n";
    p.table = t.str();
    return p;
  }
  std::vector<std::pair<std::string, Sum>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  const double per = 1.0 / static_cast<double>(std::max<int64_t>(steps, 1));
  t << "| GPU activity | calls per step | us per call | us per step | share of busy time |\n"
    << "|---|---:|---:|---:|---:|\n";
  double shown = 0;
  for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(top); ++i) {
    const Sum& s = rows[i].second;
    shown += s.ns;
    std::string name = short_name(rows[i].first);
    std::replace(name.begin(), name.end(), '|', '/');
    t << "| `" << name << "` | " << std::setprecision(1) << static_cast<double>(s.calls) * per << " | "
      << std::setprecision(2) << s.ns / 1e3 / static_cast<double>(s.calls) << " | " << std::setprecision(1)
      << s.ns / 1e3 * per << " | " << std::setprecision(1) << 100.0 * s.ns / (p.busy_ms * 1e6) << "% |\n";
  }
  if (rows.size() > static_cast<size_t>(top))
    t << "| (" << rows.size() - static_cast<size_t>(top) << " more names) | | | " << std::setprecision(1)
      << (p.busy_ms * 1e6 - shown) / 1e3 * per << " | " << 100.0 * (1.0 - shown / (p.busy_ms * 1e6)) << "% |\n";
  p.table = t.str();
  return p;
}

}  // namespace fp8rl
