#!/usr/bin/env bash
# Unpacks the part of FlashInfer's PyPI wheel a CUDA build of fp8rl compiles against into DEST
# (DEST/flashinfer/data/...): FlashInfer's header-only kernels, the CUTLASS/CuTe headers they
# use and the CCCL (libcu++) headers they were written against. ~50 MB of headers out of the
# 62 MB wheel; nothing of FlashInfer's Python or its precompiled kernels.
#   bash scripts/fetch-flashinfer.sh DEST             (downloads the wheel with pip)
#   FP8RL_FLASHINFER_WHEEL=path.whl bash scripts/fetch-flashinfer.sh DEST
# Used by scripts/setup.sh (CUDA builds) and scripts/gpu-deps.sh (for the offline GPU machine).
set -euo pipefail
version=0.7.2.post1
dest=${1:?usage: fetch-flashinfer.sh DEST}
wheel=${FP8RL_FLASHINFER_WHEEL:-}
if [ -z "$wheel" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "flashinfer-python==$version"
  wheel=$(ls "$tmp"/flashinfer_python-*.whl)
fi
mkdir -p "$dest"
python3 - "$dest" "$wheel" <<'PY'
import sys, zipfile
dest, wheel = sys.argv[1], sys.argv[2]
keep = ("flashinfer/data/include/", "flashinfer/data/cutlass/include/",
        "flashinfer/data/cutlass/tools/util/include/", "flashinfer/data/cccl/libcudacxx/include/")
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(keep)]
    for n in names:
        z.extract(n, dest)
print(f"[fetch-flashinfer] {len(names)} headers from {wheel.rsplit('/', 1)[-1]} into {dest}", file=sys.stderr)
PY
