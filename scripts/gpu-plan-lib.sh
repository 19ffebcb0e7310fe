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
# Two `fp8rl bench rollout` reports side by side (before and after a change), per cell (weights /
# KV, decode, batch): generated tokens/s off and on and their ratio, ms/step and graph GPU ms/step
# off -> on.
compare() {  # $1 = report before (switch off), $2 = after (on)
  awk -F'|' '
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    /^\| (bf16|fp8)/ {
      key = trim($2) " | " trim($3) " | " trim($4)
      if (FILENAME == ARGV[1]) { off[key] = trim($5); off_st[key] = trim($6); off_ms[key] = trim($7); order[++n] = key }
      else { on[key] = trim($5); on_st[key] = trim($6); on_ms[key] = trim($7) }
    }
    END {
      print "| weights / KV | decode | batch | tokens/s off | on | on / off | ms/step off -> on | graph GPU ms/step off -> on |"
      print "|---|---|---:|---:|---:|---:|---:|---:|"
      for (i = 1; i <= n; ++i) {
        k = order[i]
        if (!(k in on)) continue
        printf "| %s | %s | %s | %.3fx | %s -> %s | %s -> %s |\n", k, off[k], on[k], (off[k] > 0 ? on[k] / off[k] : 0), off_st[k], on_st[k], off_ms[k], on_ms[k]
      }
    }' "$1" "$2"
}
# Seconds left of the call's BUDGET (default 570, under the device's 600 s limit).
left() { echo $(( ${BUDGET:-570} - ($(date +%s) - t0) )); }
# The A/B scripts' common start: build (unless built), the gpu-labelled tests named by TESTS
# (ctest arguments; skipped when under 120 s are left), then the checkpoint build_and_init
# started, which is written while the tests run (over a minute at 8B on the CPU).
build_test_and_wait() {
  build_and_init if_missing
  if [ -n "${TESTS:-}" ] && [ "$(left)" -lt 120 ]; then
    echo "ctest ${TESTS} skipped: $(left) s left"
  elif [ -n "${TESTS:-}" ]; then
    local s=$(date +%s)
    timeout $(( $(left) - 60 )) ctest --test-dir "$root/build-gpu" ${TESTS} -j 3 --output-on-failure >"$out/ctest.log" 2>&1
    echo "ctest ${TESTS}: rc $? in $(( $(date +%s) - s )) s"
    grep -E "tests passed|\*\*\*Failed|Timeout|Exception" "$out/ctest.log" | head -30
  fi
  wait
  [ -f "$model/config.json" ] || { echo "fp8rl init --preset $preset failed:"; tail -5 "$out/init.log"; exit 1; }
}
