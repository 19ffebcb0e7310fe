#!/usr/bin/env bash
# Build the TMA + wgmma skinny FP8 GEMM harness (main.cu says what it measures); nvcc only.
#   bash scripts/fp8-skinny-tma/build.sh && ./fp8_skinny_tma
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cuda=$(dirname "$(dirname "$(command -v nvcc)")")
# libcuda for cuTensorMapEncodeTiled: the driver's where there is one, else the toolkit's stub.
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I"$root" "$root/scripts/fp8-skinny-tma/main.cu" -lcublasLt \
  -L"$cuda/lib64/stubs" -lcuda -o "${OUTPUT:-$root/fp8_skinny_tma}"
