// Peak memory per phase (trainer/device_memory.h) on the CPU: the process's peak resident set,
// reset between phases (Linux /proc/self/clear_refs).
#include <ATen/ATen.h>

#include "tests/catch.h"
#include "trainer/device_memory.h"

using namespace fp8rl::trainer;

TEST_CASE("peak memory on CPU: a phase's peak resident set, reset between phases", "[trainer][memory]") {
  const at::Device cpu(at::kCPU);
  reset_peak_memory(cpu);
  const double before = peak_memory_gib(cpu);
  CHECK(before > 0);  // the process itself
  {
    const at::Tensor big = at::ones({64, 1024, 1024}, at::kFloat);  // 256 MiB, every page written
    CHECK(peak_memory_gib(cpu) >= before + 0.2);
  }
  reset_peak_memory(cpu);
  if (cpu_peak_is_per_phase()) CHECK(peak_memory_gib(cpu) < before + 0.2);  // the freed tensor is not this phase's
  else CHECK(peak_memory_gib(cpu) >= before + 0.2);                         // no reset: the process's peak
}
