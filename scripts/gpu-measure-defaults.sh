#!/usr/bin/env bash
# On the GPU machine, detached (scripts/gpu-detach.sh): the engine with its default paths,
# everything issue 11's targets name, and the switches still being judged, in order of what is
# needed first (a plan cut short by the device budget keeps what it measured). Logs go to $OUT.
#  1. build build-gpu/ and, beside it, the paged decode kernel's own bench (seconds);
#  2. the paged decode kernel alone (scripts/paged-decode-bench): bf16 and FP8 caches, several
#     batch sizes and split counts, shared prefixes, the FP8 cache with two and three stages,
#     against an older kernel: .pd-base/ where the tree has it (git-ignored, carried: make it
#     with `git archive <commit> rollout core | tar -x -C .pd-base`, since the GPU machine's copy
#     of .git may be stale), else commit $PD_BASE from git, else this tree;
#  3. every GPU test at the defaults (and the warp-split kernel's own test);
#  4. Nsight Compute on the kernel alone (batch 256 and 64, bf16 and FP8 caches, the FP8 cache's
#     warp split): where its warps stall, the reports and their text beside the logs;
#  4b. the FP8 cache's warp-split softmax in the engine (FP8RL_FP8_KV_WARP_SPLIT=0, then 1),
#     FP8 + FP8 KV at batch 16-256;
#  5. `fp8rl bench rollout` at batch 128, 256 and 1, 16, 64 (2 rollouts a cell) (Qwen3-8B shape,
#     512-token prompts, n = 8, 1024 new tokens), then FP8 + FP8 KV again with the warp split;
#  6. (measured on 2026-12-05, last so a short budget skips them) HF transformers generate() on
#     the same shape at batch 1 and 64 (the peer baseline), the 8K-token prefill, the RL-shaped
#     rollout (1024 sequences on 256 slots, 32-256 new tokens), async scheduling against
#     synchronous at batch 1 and 64.
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
# The kernel bench's "old" (step 2 above); "new" is this tree's. nvcc only, seconds beside the
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
step "ctest -L gpu"
timeout 480 ctest --test-dir "$root/build-gpu" -L gpu -j 3 --timeout 400 --output-on-failure >"$out/ctest.log" 2>&1
echo "rc $?"; grep -E "tests passed|\*\*\*Failed|\*\*\*Skipped|Timeout|Exception|Total Test" "$out/ctest.log" | head -30
echo "slowest:"; grep -E "Test +#" "$out/ctest.log" | awk '{print $(NF-1), $4, $5, $6, $7, $8, $9}' | sort -n | tail -5
ctest --test-dir "$root/build-gpu" -L gpu --show-only=json-v1 2>/dev/null | grep -c OMP_NUM_THREADS
# One launch of one variant at one batch under Nsight Compute (--clock-control none: METHOD.md).
profile() {  # $1 = report name, $2 = batch, $3 = bf16|fp8, $4 = variant name
  local ncu
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  [ -n "$ncu" ] && [ -x "$root/build-gpu/pd_bench" ] || { echo "no ncu or pd_bench"; return; }
  # Launches 1-2 are the correctness pair (old, then the variant); the third is a timed one.
  PD_B=$2 PD_KV=$3 PD_VAR=$4 timeout 150 "$ncu" --clock-control none --set full \
    --kernel-name regex:paged_decode_kernel --launch-skip 2 --launch-count 1 -f -o "$out/ncu-$1" \
    "$root/build-gpu/pd_bench" >"$out/ncu-$1.log" 2>&1
  echo "$1: rc $?"
  "$ncu" --import "$out/ncu-$1.ncu-rep" --page details --print-details all >"$out/ncu-$1.txt" 2>&1
  grep -E "^ +(Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per Thread|Warp Cycles Per Issued Instruction|Issued Ipc Active|L2 Hit Rate|L1/TEX Hit Rate) " "$out/ncu-$1.txt" | head -12
}
step "Nsight Compute: the paged decode kernel alone"
profile fp8-b256-two 256 fp8 "new"
profile fp8-b256-three 256 fp8 "new, 3 stages"
profile bf16-b256 256 bf16 "new"
profile fp8-b64-three 64 fp8 "new, 3 stages"
profile fp8-b256-warp 256 fp8 "new, warp split"
profile fp8-b64-warp3 64 fp8 "new, 3 st., warp split"
wait
[ -f "$model/config.json" ] || { echo "fp8rl init failed:"; tail -5 "$out/init.log"; exit 1; }

step "the FP8 cache's warp-split softmax in the engine (FP8RL_FP8_KV_WARP_SPLIT=0, then 1)"
for v in 0 1; do
  FP8RL_FP8_KV_WARP_SPLIT=$v bench warp-split-$v --configs fp8-kv --batch 16,64,128,256 --gen-len 256
done
step "decode, batch 128-256"
bench decode-large --batch 128,256 --gen-len 1024
step "decode, batch 1-64"
bench decode-small --batch 1,16,64 --gen-len 1024 --reps 2
step "decode with the warp split (FP8RL_FP8_KV_WARP_SPLIT=1), FP8 + FP8 KV, batch 1-256"
FP8RL_FP8_KV_WARP_SPLIT=1 bench decode-warp-large --configs fp8-kv --batch 128,256 --gen-len 1024
FP8RL_FP8_KV_WARP_SPLIT=1 bench decode-warp-small --configs fp8-kv --batch 1,16,64 --gen-len 1024 --reps 2
step "HF transformers generate(), same shape"
timeout 420 python3 "$root/scripts/hf_generate_baseline.py" --preset 8b --batch 1,64 --gen-len 1024 >"$out/hf-generate.log" 2>&1
echo "rc $?"; tail -5 "$out/hf-generate.log"
step "8K-token prefill"
bench prefill-8k --batch 1 --prompt-len 8192 --gen-len 4
step "RL-shaped rollout: 1024 sequences on 256 slots"
bench rl-shaped --batch 1024 --max-num-seqs 256 --gen-len 256 --gen-len-min 32
step "async scheduling"
bench async --configs bf16,fp8-kv --batch 1,64 --gen-len 256 --compare-async
step done
