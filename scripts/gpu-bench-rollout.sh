#!/usr/bin/env bash
# On the GPU machine: `fp8rl bench rollout` of this tree and, with BASE set, of an older tree
# built beside it, in one call, so a speed change is judged by before/after numbers from the same
# machine and run (docs/BENCHMARKS.md). Reports go to $OUT (else ./gpu-logs).
#   BASE=.base PRESETS="0.6b" BATCHES=1,64 GEN_LEN=256 bash scripts/gpu-bench-rollout.sh
# BASE: a source tree of the older commit, made on a development machine with
#   git archive <commit> | tar -x -C .base      (git-ignored; carry it with the working tree)
# EXTRA: more arguments for this tree's bench (e.g. --compare-eager); the base gets none.
# GPU_TESTS=1: also run this tree's `gpu`-labelled tests after the build (log: ctest-gpu.log).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/gpu-logs}
mkdir -p "$out"
source "$root/scripts/gpu-env.sh"
presets=${PRESETS:-0.6b}
batches=${BATCHES:-1,64}
gen_len=${GEN_LEN:-256}
build_tree() {  # $1 = source root, $2 = build dir, $3 = log name
  local start=$(date +%s)
  FP8RL_BUILD_DIR="$2" bash "$1/scripts/setup.sh" >"$out/$3" 2>&1 || { tail -40 "$out/$3"; return 1; }
  echo "built $1 in $(( $(date +%s) - start )) s"
}
build_tree "$root" "$root/build-gpu" build.log || exit 1
if [ -n "${BASE:-}" ]; then
  base=$(cd "$BASE" && pwd)
  cp -r "$root/.deps" "$base/" 2>/dev/null || true
  build_tree "$base" "$base/build-gpu" build-base.log || exit 1
fi
nvidia-smi -L
if [ "${GPU_TESTS:-0}" = 1 ]; then
  ctest --test-dir "$root/build-gpu" -L gpu -j 8 --output-on-failure >"$out/ctest-gpu.log" 2>&1
  grep -E "tests passed|\*\*\*Failed" "$out/ctest-gpu.log"
fi
# One random checkpoint per preset, written once (over a minute at 8B) and read by both trees'
# benches through --model; a base older than --model writes its own.
model_args() {  # $1 = fp8rl binary, $2 = preset
  if "$1" bench rollout --help 2>/dev/null | grep -q -- "--model"; then echo "--model /tmp/fp8rl-bench-model-$2"; else echo "--preset $2"; fi
}
for p in $presets; do
  [ -f "/tmp/fp8rl-bench-model-$p/config.json" ] ||
    "$root/build-gpu/apps/fp8rl" init --preset "$p" --out "/tmp/fp8rl-bench-model-$p" --seed 0 >"$out/init-$p.log" 2>&1 ||
    { echo "fp8rl init --preset $p failed:"; tail -3 "$out/init-$p.log"; exit 1; }
  if [ -n "${BASE:-}" ]; then
    "$base/build-gpu/apps/fp8rl" bench rollout $(model_args "$base/build-gpu/apps/fp8rl" "$p") --batch "$batches" \
      --gen-len "$gen_len" -o "$out/rollout-$p-base.md" >"$out/rollout-$p-base.log" 2>&1 || tail -20 "$out/rollout-$p-base.log"
    echo "== base, $p"; cat "$out/rollout-$p-base.md"
  fi
  "$root/build-gpu/apps/fp8rl" bench rollout $(model_args "$root/build-gpu/apps/fp8rl" "$p") --batch "$batches" \
    --gen-len "$gen_len" ${EXTRA:-} -o "$out/rollout-$p.md" >"$out/rollout-$p.log" 2>&1 || tail -20 "$out/rollout-$p.log"
  echo "== this tree, $p"; cat "$out/rollout-$p.md"
done
