#!/usr/bin/env bash
# Sets up a machine for fp8rl and builds it. Idempotent: quick when everything is in place.
#
#   1. system packages (apt): compiler, CMake, Ninja, yaml-cpp, spdlog, fmt, Catch2, JSON, CLI11,
#      PCRE2, utf8proc, gloo's headers (c10d's ProcessGroupGloo.hpp includes them; the wheel omits them)
#   2. LibTorch 2.11.0: the python3 torch if it is 2.11 (the GPU machine), else the PyPI wheel's
#      C++ part (headers + libs) unpacked into $FP8RL_DEPS_DIR (default ~/.cache/fp8rl)
#   2b. a Python venv with tensorboard for one test (optional: skipped without it)
#   2c. Debian's chromium for the HTML report test (optional: skipped without it)
#   2d. CUDA builds: FlashInfer's headers from its PyPI wheel (scripts/fetch-flashinfer.sh), for
#       the Hopper prefill attention (optional: flash-attention 2 without them)
#   3. configure (CMake + Ninja) and build into $FP8RL_BUILD_DIR (default ./build)
#
# Environment: FP8RL_CUDA=auto|ON|OFF (auto: ON where nvidia-smi sees a GPU and nvcc exists),
# FP8RL_BUILD_DIR, FP8RL_DEPS_DIR, FP8RL_TORCH_DIR (use this torch package directory),
# FP8RL_JOBS (parallel build jobs, default: all cores), FP8RL_BUILD_TARGET (one target, e.g. a
# test executable, instead of everything).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FP8RL_BUILD_DIR:-$root/build}
deps=${FP8RL_DEPS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fp8rl}
torch_version=2.11.0
# The wheel's libtorch_cpu needs libcudart and libcupti at load time, even on CPU; these are
# the versions torch 2.11.0's cuda-toolkit 13.0.2 pin resolves to.
cuda_wheels=(nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85)
jobs=${FP8RL_JOBS:-$(nproc)}

say() { echo "[setup] $*" >&2; }
die() { echo "[setup] error: $*" >&2; exit 1; }

# ---- 1. system packages -------------------------------------------------------------------
# Each need is checked by what the build uses (a tool or a header), not by package name, so a
# machine that has it from elsewhere (pip's cmake, Ubuntu's Catch2 3) installs nothing.
declare -A need=(
  [g++]="command -v g++"
  [cmake]="command -v cmake"
  [ninja-build]="command -v ninja"
  [libyaml-cpp-dev]="test -f /usr/include/yaml-cpp/yaml.h"
  [libspdlog-dev]="test -f /usr/include/spdlog/spdlog.h"
  [libfmt-dev]="test -f /usr/include/fmt/format.h"
  [catch2]="test -f /usr/include/catch2/catch.hpp -o -f /usr/include/catch2/catch_all.hpp"
  [nlohmann-json3-dev]="test -f /usr/include/nlohmann/json.hpp"
  [libcli11-dev]="test -f /usr/include/CLI/CLI.hpp"
  [libpcre2-dev]="test -f /usr/include/pcre2.h -o -f ${FP8RL_DEB_ROOT:-/nonexistent}/usr/include/pcre2.h"
  [libutf8proc-dev]="test -f /usr/include/utf8proc.h -o -f ${FP8RL_DEB_ROOT:-/nonexistent}/usr/include/utf8proc.h"
  [libgloo-dev]="test -f /usr/include/gloo/algorithm.h -o -f ${FP8RL_DEB_ROOT:-/nonexistent}/usr/include/gloo/algorithm.h"
)
missing=()
for p in "${!need[@]}"; do
  eval "${need[$p]}" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || die "apt-get update failed (needed for: ${missing[*]})"
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi

# ---- 2. LibTorch --------------------------------------------------------------------------
torch_dir=${FP8RL_TORCH_DIR:-}
if [ -z "$torch_dir" ]; then
  py_torch=$(python3 -c 'import os, torch; print(torch.__version__.split("+")[0], os.path.dirname(torch.__file__))' 2>/dev/null || true)
  if [ "${py_torch%% *}" = "$torch_version" ]; then
    torch_dir=${py_torch#* }
    say "using python3's torch $torch_version at $torch_dir"
  fi
fi
if [ -z "$torch_dir" ]; then
  site="$deps/libtorch-$torch_version"
  torch_dir="$site/torch"
  if [ ! -f "$site/.complete" ]; then
    say "fetching LibTorch $torch_version (the PyPI wheel's C++ part; ~530 MB download, once)"
    wheels="$deps/wheels"
    mkdir -p "$wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "torch==$torch_version" "${cuda_wheels[@]}" \
      || die "pip download of torch==$torch_version failed"
    rm -rf "$site.partial"
    mkdir -p "$site.partial"
    # Unpack what a C++ build needs, in the wheel's own layout (torch/, nvidia/cu13/lib/), so
    # libtorch's RPATH ($ORIGIN/../../nvidia/cu13/lib) finds libcudart/libcupti.
    python3 - "$site.partial" "$wheels"/torch-"$torch_version"-*.whl "$wheels"/nvidia_cuda_runtime-*.whl \
      "$wheels"/nvidia_cuda_cupti-*.whl <<'PY'
import sys, zipfile
dest, wheels = sys.argv[1], sys.argv[2:]
keep = ("torch/include/", "torch/lib/", "torch/share/cmake/", "nvidia/cu13/lib/")
for w in wheels:
    with zipfile.ZipFile(w) as z:
        for name in z.namelist():
            if name.startswith(keep) and not name.endswith("libtorch_python.so"):
                z.extract(name, dest)
PY
    rm -rf "$site"
    mv "$site.partial" "$site"
    touch "$site/.complete"
    rm -f "$wheels"/*.whl
  fi
fi
[ -f "$torch_dir/include/ATen/ATen.h" ] || die "no LibTorch headers in $torch_dir"

# ---- 2b. test tools (Python) --------------------------------------------------------------
# The `tensorboard` package, in a venv of its own, for the test that reads fp8rl's event files
# back with TensorBoard's own reader. Not needed to build or run fp8rl: if it cannot be
# installed (no python3-venv, no network) that one test reports itself skipped.
pytools=$deps/pytools
test_python=python3
if [ ! -f "$pytools/.complete" ]; then
  rm -rf "$pytools"
  if python3 -m venv "$pytools" >/dev/null 2>&1 && "$pytools/bin/pip" install -q --disable-pip-version-check --retries 0 --timeout 10 tensorboard >/dev/null 2>&1; then
    touch "$pytools/.complete"
  else
    say "warning: could not install tensorboard into $pytools; the TensorBoard read-back test will be skipped"
  fi
fi
[ -f "$pytools/.complete" ] && test_python=$pytools/bin/python3

# ---- 2c. a browser (test tool) --------------------------------------------------------------
# Debian's chromium renders `fp8rl compare`'s HTML report in one test (tests/cli/
# test_compare_report.sh). Not needed to build or run fp8rl: where apt cannot install it (no
# registry, not root), that test reports itself skipped. FP8RL_NO_BROWSER=1 skips the install.
chromium_bin=$(command -v chromium || true)
if [ -z "$chromium_bin" ] && [ "${FP8RL_NO_BROWSER:-0}" != 1 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  say "installing chromium (for the HTML report test)"
  apt_opts=(-o Acquire::Retries=0 -o Acquire::http::Timeout=20)
  if DEBIAN_FRONTEND=noninteractive $sudo apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get "${apt_opts[@]}" install -y -qq chromium >/dev/null 2>&1; then
    chromium_bin=$(command -v chromium || true)
  fi
  [ -n "$chromium_bin" ] || say "warning: could not install chromium; the HTML report test will be skipped"
fi

# ---- 3. configure and build ---------------------------------------------------------------
cuda=${FP8RL_CUDA:-auto}
if [ "$cuda" = auto ]; then
  cuda=OFF
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; fi
  fi
fi
if [ "$cuda" = ON ] && ! command -v nvcc >/dev/null 2>&1; then export PATH=/usr/local/cuda/bin:$PATH; fi
# FlashInfer's headers (CUDA builds only): the engine's Hopper prefill attention compiles
# against them. From the tarball scripts/gpu-deps.sh leaves in .deps (machines without a
# registry), else from the PyPI wheel. Without them the build goes on with flash-attention 2.
flashinfer_version=$(sed -n "s/^version=//p" "$root/scripts/fetch-flashinfer.sh")
flashinfer_flag=()
if [ "$cuda" = ON ]; then
  fi_site="$deps/flashinfer-$flashinfer_version"
  if [ ! -f "$fi_site/.complete" ]; then
    rm -rf "$fi_site.partial"
    fi_tar="$root/.deps/flashinfer-$flashinfer_version-headers.tar.xz"
    if { [ -f "$fi_tar" ] && mkdir -p "$fi_site.partial" && tar -xJf "$fi_tar" -C "$fi_site.partial"; } \
      || bash "$root/scripts/fetch-flashinfer.sh" "$fi_site.partial"; then
      rm -rf "$fi_site"
      mv "$fi_site.partial" "$fi_site"
      touch "$fi_site/.complete"
    else
      say "warning: no FlashInfer headers (no $fi_tar, pip download failed); building without the Hopper prefill attention"
    fi
  fi
  if [ -f "$fi_site/.complete" ]; then flashinfer_flag=(-DFP8RL_FLASHINFER_DIR="$fi_site/flashinfer/data"); fi
fi
mkdir -p "$build"
say "configuring $build (FP8RL_CUDA=$cuda)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${flashinfer_flag[@]}" \
  -DFP8RL_TORCH_DIR="$torch_dir" -DFP8RL_CUDA="$cuda" -DFP8RL_TEST_PYTHON="$test_python" -DFP8RL_TEST_CHROMIUM="$chromium_bin" >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log" >&2; die "cmake configure failed (log above)"; }
say "building with $jobs jobs"
cmake --build "$build" -j "$jobs" ${FP8RL_BUILD_TARGET:+--target "$FP8RL_BUILD_TARGET"}
say "done: $build/${FP8RL_BUILD_TARGET:-apps/fp8rl}"
