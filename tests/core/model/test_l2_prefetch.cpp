// core/util/l2_prefetch.h: which weight bytes a kernel asks L2 for, and how its blocks share them.
// The device side runs for_each_l2_chunk as tested here (core/util/l2_prefetch.cuh).
#include <cstdint>
#include <vector>

#include "core/util/l2_prefetch.h"
#include "tests/catch.h"

using fp8rl::clip_l2_prefetch;
using fp8rl::kL2PrefetchChunk;
using fp8rl::L2Prefetch;
using fp8rl::L2Range;

namespace {
// A fake address (never dereferenced): the tests only do arithmetic on it.
const void* at_offset(uintptr_t a) { return reinterpret_cast<const void*>(a); }
}  // namespace

TEST_CASE("clip_l2_prefetch: whole ranges while they fit, then the next one's head", "[l2_prefetch]") {
  const L2Range o{at_offset(0x100000), 16 << 20}, gate_up{at_offset(0x4000000), 96 << 20};
  const L2Prefetch p = clip_l2_prefetch({o, gate_up}, int64_t{32} << 20);
  CHECK(p.ranges[0].data == o.data);
  CHECK(p.ranges[0].bytes == o.bytes);
  CHECK(p.ranges[1].data == gate_up.data);
  CHECK(p.ranges[1].bytes == (16 << 20));
  CHECK(p.total_bytes() == (int64_t{32} << 20));
  // A budget smaller than the first range: its head only; none: nothing.
  const L2Prefetch head = clip_l2_prefetch({o, gate_up}, (8 << 20) + 7);
  CHECK(head.ranges[0].bytes == (8 << 20));
  CHECK(head.ranges[1].bytes == 0);
  CHECK(clip_l2_prefetch({o, gate_up}, 0).total_bytes() == 0);
  CHECK(clip_l2_prefetch({o, gate_up}, 15).total_bytes() == 0);
}

TEST_CASE("clip_l2_prefetch: skips empty and unaligned ranges, rounds lengths down to 16 bytes", "[l2_prefetch]") {
  const L2Range empty{}, unaligned{at_offset(0x1008), 4096}, odd{at_offset(0x2000), 1000 + 9}, more{at_offset(0x8000), 64};
  const L2Prefetch p = clip_l2_prefetch({empty, unaligned, odd, more}, 1 << 20);
  CHECK(p.ranges[0].data == odd.data);
  CHECK(p.ranges[0].bytes == 1008);
  CHECK(p.ranges[1].data == more.data);
  CHECK(p.ranges[1].bytes == 64);
  // At most two ranges are kept.
  const L2Prefetch two = clip_l2_prefetch({more, more, more}, 1 << 20);
  CHECK(two.total_bytes() == 128);
}

TEST_CASE("for_each_l2_chunk: the parts together ask for every byte once, in 64 KiB pieces", "[l2_prefetch]") {
  const L2Range a{at_offset(0x100000), 3 * kL2PrefetchChunk + 4096}, b{at_offset(0x10000000), 2 * kL2PrefetchChunk};
  const L2Prefetch p = clip_l2_prefetch({a, b}, int64_t{1} << 30);
  REQUIRE(fp8rl::l2_prefetch_chunks(p) == 6);
  for (const int64_t parts : {1, 2, 4, 5, 6, 64}) {
    INFO(parts << " parts");
    std::vector<int> hits_a(static_cast<size_t>(a.bytes), 0), hits_b(static_cast<size_t>(b.bytes), 0);
    int64_t calls = 0;
    for (int64_t part = 0; part < parts; ++part) {
      int64_t mine = 0;
      fp8rl::for_each_l2_chunk(p, part, parts, [&](const char* address, int64_t bytes) {
        CHECK(bytes > 0);
        CHECK(bytes <= kL2PrefetchChunk);
        CHECK(bytes % 16 == 0);
        const auto at = reinterpret_cast<uintptr_t>(address);
        const bool in_a = at >= reinterpret_cast<uintptr_t>(a.data) && at < reinterpret_cast<uintptr_t>(a.data) + a.bytes;
        std::vector<int>& hits = in_a ? hits_a : hits_b;
        const uintptr_t base = reinterpret_cast<uintptr_t>(in_a ? a.data : b.data);
        REQUIRE(at - base + bytes <= hits.size());
        for (int64_t i = 0; i < bytes; ++i) ++hits[at - base + i];
        ++mine;
        ++calls;
      });
      // Chunks go round-robin: no part takes more than one chunk beyond another's.
      CHECK(mine <= (6 + parts - 1) / parts);
    }
    CHECK(calls == 6);
    bool once = true;
    for (const int h : hits_a) once = once && h == 1;
    for (const int h : hits_b) once = once && h == 1;
    CHECK(once);
  }
}
