#!/usr/bin/env bash
# README command 2: set up, build and run the tests. Tests labelled `gpu` run only where a GPU
# is present (they exist only in CUDA builds; see scripts/gpu-test.sh for the GPU machine).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FP8RL_BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
label_args=(-LE gpu)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then label_args=(); fi
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "${label_args[@]}"
