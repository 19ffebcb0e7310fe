#!/usr/bin/env bash
# On the GPU machine, detached (scripts/gpu-detach.sh): the measuring plan for the engine's
# speed switches, in order of what a decision needs first (docs/BENCHMARKS.md, fifth session,
# has the run that set today's defaults). Logs go to $OUT.
#  1. build build-gpu/; every GPU test with the kernel switches on (a failure is re-run with
#     them off, so a failing switch is told from a failing test), while the 8B checkpoint is
#     written;
#  2. each kernel switch off and on (scripts/gpu-ab.sh, Qwen3-8B shape, batch 1 and 64), then
#     all of them together, three rollouts a cell;
#  3. decode graphs kept across rollouts, mixed steps split (1024 sequences on 256 slots);
#  4. shared-prefix decode under the kernel profiler; an 8K-token prefill.
set -uo pipefail
root=${FP8RL_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
source "$root/scripts/gpu-plan-lib.sh"
kernels="FP8RL_PDL FP8RL_FP8_KV_HALF_MMA FP8RL_FUSED_KV_STORE"

build_and_init

on=(); off=(); for k in $kernels; do on+=("$k=1"); off+=("$k=0"); done
step "ctest -L gpu with ${on[*]}"
env "${on[@]}" timeout 600 ctest --test-dir "$root/build-gpu" -L gpu -j 3 --timeout 400 --output-on-failure >"$out/ctest-on.log" 2>&1
echo "rc $?"; grep -E "tests passed|\*\*\*Failed|Timeout|Exception|Total Test" "$out/ctest-on.log" | head -30
if grep -qE "(^|[^0-9])[1-9][0-9]* tests failed" "$out/ctest-on.log"; then
  step "failed tests again with the switches off"
  env "${off[@]}" timeout 600 ctest --test-dir "$root/build-gpu" --rerun-failed --timeout 400 --output-on-failure >"$out/ctest-off-rerun.log" 2>&1
  grep -E "tests passed|\*\*\*Failed|Timeout|Exception" "$out/ctest-off-rerun.log" | head -30
fi
wait
[ -f "$model/config.json" ] || { echo "fp8rl init failed:"; tail -5 "$out/init.log"; exit 1; }

ab() { BUDGET=100000 bash "$root/scripts/gpu-ab.sh"; }
step "each kernel switch off and on"
SWITCHES="$kernels" ab
step "the kernel switches together, 3 rollouts a cell"
SWITCHES="${kernels// /+}" ARGS="--batch 1,64 --gen-len 256 --reps 3" STEP_LIMIT=240 ab
step "decode graphs kept across rollouts"
SWITCHES=FP8RL_KEEP_DECODE_GRAPHS ARGS="--batch 1,64 --gen-len 256 --reps 2" ab
step "mixed steps split"
SWITCHES=FP8RL_SPLIT_MIXED_STEPS ARGS="--batch 1024 --max-num-seqs 256 --gen-len 256 --gen-len-min 32" STEP_LIMIT=300 ab
step "shared-prefix decode, profiled"
timeout 240 "$fp8rl" bench rollout --model "$model" --batch 64,128 --gen-len 256 --compare-shared-prefix --profile \
  -o "$out/shared-prefix-profile.md" >"$out/shared-prefix-profile.log" 2>&1
echo "rc $?"; grep -E "^\| (bf16|fp8)|shared|saved" "$out/shared-prefix-profile.md" | head -30
step "8K-token prefill"
timeout 240 "$fp8rl" bench rollout --model "$model" --batch 1 --prompt-len 8192 --gen-len 4 \
  -o "$out/prefill-8k.md" >"$out/prefill-8k.log" 2>&1
echo "rc $?"; grep -E "^\| (bf16|fp8)|prefill" "$out/prefill-8k.md" | head -20
step done
