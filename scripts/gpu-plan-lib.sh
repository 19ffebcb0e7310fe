# Sourced by the GPU measuring plans (scripts/gpu-measure-*.sh, run detached by gpu-detach.sh)
# after they set $root: $out for the logs, step() to time-stamp each step, the fp8rl binary and
# the Qwen3-8B-shape checkpoint the benches read, and build_and_init.
out=${OUT:-$root/gpu-logs}
mkdir -p "$out"
source "$root/scripts/gpu-env.sh"
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }
fp8rl=$root/build-gpu/apps/fp8rl
model=/tmp/fp8rl-bench-model-8b
# Builds build-gpu/ (or stops the plan), then writes the checkpoint in the background (seconds on
# CUDA): `wait` for it before the first bench.
build_and_init() {
  step "build ($(git -C "$root" log --oneline -1 2>/dev/null))"
  FP8RL_BUILD_DIR=$root/build-gpu bash "$root/scripts/setup.sh" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
  nvidia-smi -L
  [ -f "$model/config.json" ] || "$fp8rl" init --preset 8b --out "$model" --device cuda --seed 0 >"$out/init.log" 2>&1 &
}
