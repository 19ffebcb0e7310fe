#include "apps/kernel_profile.h"

#include "apps/gpu_timeline.h"

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
    double ns = 0;        // the activities' own durations
    double only_ns = 0;   // the part of them no earlier activity covers (gpu_timeline.h)
  };
  std::vector<std::string> names;
  std::vector<GpuInterval> spans;
  for (const prof::KinetoEvent& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;  // host-side events (runtime calls, ops)
    names.push_back(e.name());
    spans.push_back({e.startNs(), e.endNs()});
  }
  const std::vector<uint64_t> only = exclusive_ns(spans);
  std::map<std::string, Sum> by_name;
  KernelProfile p;
  uint64_t first = std::numeric_limits<uint64_t>::max(), last = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    Sum& s = by_name[names[i]];
    const double ns = spans[i].end_ns > spans[i].start_ns ? static_cast<double>(spans[i].end_ns - spans[i].start_ns) : 0.0;
    ++s.calls;
    s.ns += ns;
    s.only_ns += static_cast<double>(only[i]);
    p.busy_ms += ns / 1e6;
    p.union_ms += static_cast<double>(only[i]) / 1e6;
    first = std::min(first, spans[i].start_ns);
    last = std::max(last, spans[i].end_ns);
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
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.only_ns > b.second.only_ns; });
  const double per = 1.0 / static_cast<double>(std::max<int64_t>(steps, 1));
  const double busy_ns = std::max(p.union_ms * 1e6, 1.0);  // > 0 even if every activity was empty
  t << "| GPU activity | calls per step | us per call | us per step | us per step, overlaps counted once | share of busy time |\n"
    << "|---|---:|---:|---:|---:|---:|\n";
  double shown = 0, shown_only = 0;
  for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(top); ++i) {
    const Sum& s = rows[i].second;
    shown += s.ns;
    shown_only += s.only_ns;
    std::string name = short_name(rows[i].first);
    std::replace(name.begin(), name.end(), '|', '/');
    t << "| `" << name << "` | " << std::setprecision(1) << static_cast<double>(s.calls) * per << " | "
      << std::setprecision(2) << s.ns / 1e3 / static_cast<double>(s.calls) << " | " << std::setprecision(1)
      << s.ns / 1e3 * per << " | " << s.only_ns / 1e3 * per << " | " << 100.0 * s.only_ns / busy_ns << "% |\n";
  }
  if (rows.size() > static_cast<size_t>(top))
    t << "| (" << rows.size() - static_cast<size_t>(top) << " more names) | | | " << std::setprecision(1)
      << (p.busy_ms * 1e6 - shown) / 1e3 * per << " | " << (busy_ns - shown_only) / 1e3 * per << " | "
      << 100.0 * (1.0 - shown_only / busy_ns) << "% |\n";
  p.table = t.str();
  return p;
}

}  // namespace fp8rl
