# Sourced by the GPU scripts that build and bench (gpu-ab.sh, the plans gpu-measure-*.sh that
# gpu-detach.sh runs) after they set $root: $out for the logs, step() to time-stamp each step,
# the fp8rl binary and the checkpoint of $PRESET (default 8b) the benches read, build_and_init.
out=${OUT:-$root/gpu-logs}
mkdir -p "$out"
source "$root/scripts/gpu-env.sh"
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }
fp8rl=$root/build-gpu/apps/fp8rl
preset=${PRESET:-8b}
model=/tmp/fp8rl-bench-model-$preset
# Builds build-gpu/ (or stops the script), then writes the preset's checkpoint in the background
# (seconds on CUDA; `wait` for it before the first bench). `build_and_init if_missing` builds only
# where there is no fp8rl yet (REBUILD=1: always).
build_and_init() {
  if [ "${1:-}" != if_missing ] || [ ! -x "$fp8rl" ] || [ "${REBUILD:-0}" = 1 ]; then
    step "build ($(git -C "$root" log --oneline -1 2>/dev/null))"
    FP8RL_BUILD_DIR=$root/build-gpu bash "$root/scripts/setup.sh" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
  fi
  nvidia-smi -L
  [ -f "$model/config.json" ] || "$fp8rl" init --preset "$preset" --out "$model" --device cuda --seed 0 >"$out/init.log" 2>&1 &
}
