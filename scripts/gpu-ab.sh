#!/usr/bin/env bash
# On the GPU machine: environment switches measured off and on by one binary in one call (a speed
# change is judged by before/after numbers from the same run, docs/BENCHMARKS.md). Builds
# build-gpu/ unless it is there (REBUILD=1: always), writes the preset's random checkpoint once,
# optionally runs gpu-labelled tests, then per switch `fp8rl bench rollout` with it =0 and =1
# (the other switches at their defaults), then both side by side per cell (tokens/s off, on, ratio;
# graph GPU ms/step off -> on: ab-<switch>.md). Reports go to $OUT (else ./gpu-logs).
#   SWITCHES="FP8RL_PDL FP8RL_FP8_KV_HALF_MMA" PRESET=8b ARGS="--batch 1,64 --gen-len 256" bash scripts/gpu-ab.sh
# A switch may be a group joined by '+' (FP8RL_PDL+FP8RL_FUSED_KV_STORE): all of them off, then on;
# or NAME=v1,v2,... (e.g. FP8RL_FP8_KV_THREE_STAGES=0,1): each value against the first.
# TESTS: ctest arguments for a test run first (e.g. "-L gpu -R rollout"); empty: none.
# BUDGET: seconds this call may take (default 570, under the device's 600 s limit): a step that
#   would not fit is skipped, so the logs of what ran still come back.
# STEP_LIMIT: seconds one bench may take (default 120).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/gpu-plan-lib.sh"
build_test_and_wait
limit=${STEP_LIMIT:-120}
for group in ${SWITCHES:-}; do
  # NAME=v1,v2,...: one variable at several values, each against the first; else 0 then 1.
  values="0 1"
  if [[ $group == *=* ]]; then values=${group#*=}; values=${values//,/ }; group=${group%%=*}; fi
  sw=${group//+/_}
  first=
  for v in $values; do
    name="ab-$sw-$v"
    settings=()
    for one in ${group//+/ }; do settings+=("$one=$v"); done
    if [ "$(left)" -lt "$limit" ]; then echo "== $sw=$v skipped: $(left) s left"; continue; fi
    s=$(date +%s)
    env "${settings[@]}" timeout "$limit" "$fp8rl" bench rollout --model "$model" ${ARGS:---batch 1,64 --gen-len 256} \
      -o "$out/$name.md" >"$out/$name.log" 2>&1
    echo "== $sw=$v: rc $? in $(( $(date +%s) - s )) s"
    grep -E "^\| (bf16|fp8)" "$out/$name.md" 2>/dev/null
    if [ -z "$first" ]; then first=$v; continue; fi
    if [ -s "$out/ab-$sw-$first.md" ] && [ -s "$out/$name.md" ]; then
      echo "== $sw: $first vs $v, same call"
      compare "$out/ab-$sw-$first.md" "$out/$name.md" | tee "$out/ab-$sw-$first-vs-$v.md"
    fi
  done
done
echo "done at $(( $(date +%s) - t0 )) s"
