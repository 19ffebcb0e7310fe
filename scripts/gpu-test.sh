#!/usr/bin/env bash
# On the GPU machine: configure with CUDA, build, run every test (gpu-labelled ones included).
# Logs go to $OUT when it is set (the device tool brings that folder back), else ./gpu-logs.
#   bash scripts/gpu-test.sh
#   FP8RL_CTEST_ARGS='-L gpu' bash scripts/gpu-test.sh   # a subset (any ctest arguments)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/gpu-logs}
mkdir -p "$out"
source "$root/scripts/gpu-env.sh"
export FP8RL_BUILD_DIR=${FP8RL_BUILD_DIR:-$root/build-gpu}
{
  nvidia-smi -L; nvcc --version | tail -1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$out/env.txt"
start=$(date +%s)
bash "$root/scripts/setup.sh" >"$out/build.log" 2>&1
status=$?
echo "clean build: $(( $(date +%s) - start )) s, status $status" | tee -a "$out/env.txt"
if [ $status -ne 0 ]; then tail -60 "$out/build.log"; exit $status; fi
ctest --test-dir "$FP8RL_BUILD_DIR" --output-on-failure -j 8 ${FP8RL_CTEST_ARGS:-} 2>&1 | tee "$out/ctest.log"
exit "${PIPESTATUS[0]}"
