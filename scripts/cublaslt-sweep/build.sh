#!/usr/bin/env bash
# Build the cuBLASLt candidate sweep (main.cu says what it measures); nvcc only, ~20 s.
#   bash scripts/cublaslt-sweep/build.sh && ./cublaslt_sweep
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a "$root/scripts/cublaslt-sweep/main.cu" -lcublasLt \
  -o "${OUTPUT:-$root/cublaslt_sweep}"
