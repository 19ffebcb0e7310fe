#!/usr/bin/env bash
# The paged decode kernel alone, before and after a change, on the GPU machine (nvcc only, ~1.5
# min; no LibTorch). Builds `pd_bench` from this tree's rollout/cuda/paged_decode.cu ("new") and
# from the one in BASE ("old", e.g. `git archive <commit> | tar -x -C .base`), each in its own
# namespace, and one driver that times both on the same caches (main.cu).
#   BASE=.base bash scripts/paged-decode-bench/build.sh && ./pd_bench
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/scripts/paged-decode-bench"
base=$(cd "${BASE:?BASE: a source tree of the older commit}" && pwd)
obj=$(mktemp -d)
F="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a"
nvcc $F -I"$base" -Dfp8rl=ns_old -DPD_ENTRY=pd_old -c "$here/variant.cu" -o "$obj/old.o" &
nvcc $F -I"$root" -Dfp8rl=ns_new -DPD_ENTRY=pd_new -DPD_SPLITS=pd_splits_new -c "$here/variant.cu" -o "$obj/new.o" &
nvcc $F -I"$root" -c "$here/main.cu" -o "$obj/main.o"
wait
nvcc $F "$obj/main.o" "$obj/old.o" "$obj/new.o" -o "${OUTPUT:-$root/pd_bench}"
rm -rf "$obj"
