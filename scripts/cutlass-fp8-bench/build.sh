#!/usr/bin/env bash
# Build the CUTLASS-vs-cuBLASLt small-M FP8 GEMM harness (main.cu says what it measures); nvcc
# only. CUTLASS's headers come from FlashInfer's wheel, as for the Hopper prefill kernel:
# FP8RL_FLASHINFER_DIR (its flashinfer/data folder), else the tarball scripts/gpu-deps.sh packs
# into .deps, else scripts/fetch-flashinfer.sh downloads it.
#   bash scripts/cutlass-fp8-bench/build.sh && ./cutlass_fp8_bench
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fi_dir=${FP8RL_FLASHINFER_DIR:-}
if [ -z "$fi_dir" ]; then
  fi_root=${TMPDIR:-/tmp}/fp8rl-cutlass-bench-headers
  fi_dir=$fi_root/flashinfer/data
  if [ ! -d "$fi_dir/cutlass/include" ]; then
    mkdir -p "$fi_root"
    tarball=$(ls "$root"/.deps/flashinfer-*-headers.tar.xz 2>/dev/null | head -1 || true)
    if [ -n "$tarball" ]; then tar -xJf "$tarball" -C "$fi_root"; else bash "$root/scripts/fetch-flashinfer.sh" "$fi_root"; fi
  fi
fi
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -DNDEBUG \
  -I"$fi_dir/cutlass/include" -I"$fi_dir/cutlass/tools/util/include" \
  "$root/scripts/cutlass-fp8-bench/main.cu" -lcublasLt -lcuda -o "${OUTPUT:-$root/cutlass_fp8_bench}"
