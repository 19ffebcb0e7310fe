#!/usr/bin/env bash
# On the GPU machine, detached (scripts/gpu-detach.sh): the engine with its default paths,
# everything issue 11's targets name, and the switches still being judged, in order of what is
# needed first (a plan cut short by the device budget keeps what it measured). Logs go to $OUT.
#  1. build build-gpu/ (scripts/cutlass-fp8-bench builds beside the tests);
#  2. every GPU test at the defaults;
#  3. scripts/cutlass-fp8-bench: CUTLASS's block-scaled FP8 GEMM configurations against cuBLASLt,
#     decode sizes M = 4-64, prefill sizes, then M = 128 and 256;
#  4. where a decode step's GPU time goes, kernel by kernel (`--profile`, with each kernel's time
#     net of the overlaps dependent launch makes): BF16 and FP8 + FP8 KV at batch 64 and 256,
#     1024 new tokens;
#  5. async scheduling against synchronous at batch 1, 64 and 256 (256 new tokens);
#  6. `fp8rl bench rollout` at batch 128, 256 and 1, 16, 64 (Qwen3-8B shape, 512-token prompts,
#     n = 8, 1024 new tokens), HF transformers generate() on the same shape at batch 1 and 64 (the
#     peer baseline), the 8K-token prefill, the RL-shaped rollout (1024 sequences on 256 slots,
#     32-256 new tokens);
#  7. with PD_BENCH=1, the paged decode kernel alone (scripts/paged-decode-bench): bf16 and FP8
#     caches, several batch sizes and split counts, shared prefixes, two and three stages,
#     against an older kernel: .pd-base/ where the tree has it (git-ignored, carried: make it
#     with `git archive <commit> rollout core | tar -x -C .pd-base`, since the GPU machine's copy
#     of .git may be stale), else commit $PD_BASE from git, else this tree.
#   bash scripts/gpu-detach.sh scripts/gpu-measure-defaults.sh   # in each call, back to back
set -uo pipefail
root=${FP8RL_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
source "$root/scripts/gpu-plan-lib.sh"
bench() {  # $1 = report name, then bench arguments; prints the table and the ratio lines
  local name=$1
  shift
  timeout 420 "$fp8rl" bench rollout --model "$model" "$@" -o "$out/$name.md" >"$out/$name.log" 2>&1
  echo "rc $?"
  grep -E "^\| (bf16|fp8)|^FP8|^Async|^KV capacity" "$out/$name.md" 2>/dev/null | cut -c1-400
}

build_and_init
# The CUTLASS harness: one translation unit of many kernels, minutes of nvcc on one core, so it
# builds while the kernel bench and the tests run.
OUTPUT=$root/build-gpu/cutlass_fp8_bench bash "$root/scripts/cutlass-fp8-bench/build.sh" >"$out/cutlass-build.log" 2>&1 &
cutlass_build=$!
step "ctest -L gpu"
timeout 480 ctest --test-dir "$root/build-gpu" -L gpu -j 3 --timeout 400 --output-on-failure >"$out/ctest.log" 2>&1
echo "rc $?"; grep -E "tests passed|\*\*\*Failed|\*\*\*Skipped|Timeout|Exception|Total Test" "$out/ctest.log" | head -30
echo "slowest:"; grep -E "Test +#" "$out/ctest.log" | awk '{print $(NF-1), $4, $5, $6, $7, $8, $9}' | sort -n | tail -5
ctest --test-dir "$root/build-gpu" -L gpu --show-only=json-v1 2>/dev/null | grep -c OMP_NUM_THREADS
step "CUTLASS's FP8 GEMM configurations against cuBLASLt (scripts/cutlass-fp8-bench)"
wait "$cutlass_build"
if [ -x "$root/build-gpu/cutlass_fp8_bench" ]; then
  timeout 300 "$root/build-gpu/cutlass_fp8_bench" >"$out/cutlass-bench.log" 2>&1
  echo "rc $?"; sed -n '1,/^Every configuration/p' "$out/cutlass-bench.log" | grep -E "^## |^\| "  # the summary tables
else
  echo "cutlass_fp8_bench did not build:"; tail -5 "$out/cutlass-build.log"
fi
wait  # fp8rl init, started by build_and_init
[ -f "$model/config.json" ] || { echo "fp8rl init failed:"; tail -5 "$out/init.log"; exit 1; }
step "a decode step, kernel by kernel (--profile), batch 64 and 256, 1024 new tokens"
bench profile --configs bf16,fp8-kv --batch 64,256 --gen-len 1024 --profile
step "async scheduling"
bench async --configs bf16,fp8-kv --batch 1,64,256 --gen-len 256 --compare-async
step "decode, batch 128-256"
bench decode-large --batch 128,256 --gen-len 1024
step "decode, batch 1-64"
bench decode-small --batch 1,16,64 --gen-len 1024 --reps 2
step "HF transformers generate(), same shape"
timeout 420 python3 "$root/scripts/hf_generate_baseline.py" --preset 8b --batch 1,64 --gen-len 1024 >"$out/hf-generate.log" 2>&1
echo "rc $?"; tail -5 "$out/hf-generate.log"
step "8K-token prefill"
bench prefill-8k --batch 1 --prompt-len 8192 --gen-len 4
step "RL-shaped rollout: 1024 sequences on 256 slots"
bench rl-shaped --batch 1024 --max-num-seqs 256 --gen-len 256 --gen-len-min 32
if [ "${PD_BENCH:-0}" = 1 ]; then
# The kernel bench's "old" (step 7 above); "new" is this tree's. nvcc only, seconds beside the
# build's minutes.
pd_base=$root
if [ -f "$root/.pd-base/rollout/cuda/paged_decode.cu" ]; then
  pd_base=$root/.pd-base
elif rm -rf /tmp/pd-base && mkdir -p /tmp/pd-base &&
  git -C "$root" archive "${PD_BASE:-4c8ef54}" rollout core 2>/dev/null | tar -x -C /tmp/pd-base 2>/dev/null; then
  pd_base=/tmp/pd-base
fi
echo "pd_bench old: $pd_base"
BASE=$pd_base OUTPUT=$root/build-gpu/pd_bench bash "$root/scripts/paged-decode-bench/build.sh" >"$out/pd-build.log" 2>&1
step "paged decode kernel alone"
if [ -x "$root/build-gpu/pd_bench" ]; then
  timeout 300 "$root/build-gpu/pd_bench" >"$out/pd-bench.log" 2>&1
  echo "rc $?"; grep -E "^B=|^   (old|new)" "$out/pd-bench.log" | cut -c1-170 | head -140
else
  echo "pd_bench did not build:"; tail -5 "$out/pd-build.log"
fi
fi
step done
