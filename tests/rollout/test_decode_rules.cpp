// rollout/paged_attention.h's shape rules for the FP8 cache's decode kernel, on the CPU: where
// three tile stages run (the kernel itself, and which is faster, are GPU matters: the kernel tests
// and `fp8rl bench rollout`), and the switch that forces either depth.
#include "rollout/paged_attention.h"
#include "tests/catch.h"

using namespace fp8rl::rollout;

TEST_CASE("FP8 cache decode: three stages where single-split blocks fit one wave of 4 per multiprocessor", "[rollout][decode]") {
  // Qwen3-8B's 8 KV heads on an H100's 132 multiprocessors: 528 blocks make one wave of 4.
  CHECK(fp8_kv_three_stages_by_shape(64, 8, 1, 132));    // 512 blocks
  CHECK(fp8_kv_three_stages_by_shape(66, 8, 1, 132));    // 528
  CHECK(fp8_kv_three_stages_by_shape(33, 8, 1, 132));
  CHECK_FALSE(fp8_kv_three_stages_by_shape(67, 8, 1, 132));   // 536: a second wave
  CHECK_FALSE(fp8_kv_three_stages_by_shape(128, 8, 1, 132));  // several waves
  CHECK_FALSE(fp8_kv_three_stages_by_shape(16, 8, 4, 132));   // short blocks: split 4 ways
  CHECK_FALSE(fp8_kv_three_stages_by_shape(1, 8, 64, 132));
}

TEST_CASE("FP8 cache decode: the stage switch forces either depth and goes back to the rule", "[rollout][decode]") {
  const Fp8KvStages was = fp8_kv_stages();
  set_fp8_kv_stages(Fp8KvStages::three);
  CHECK(fp8_kv_stages() == Fp8KvStages::three);
  set_fp8_kv_stages(Fp8KvStages::two);
  CHECK(fp8_kv_stages() == Fp8KvStages::two);
  set_fp8_kv_stages(Fp8KvStages::by_shape);
  CHECK(fp8_kv_stages() == Fp8KvStages::by_shape);
  set_fp8_kv_stages(was);
}
