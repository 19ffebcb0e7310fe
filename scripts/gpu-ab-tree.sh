#!/usr/bin/env bash
# On the GPU machine: a source change with no switch, measured before and after in one call (a
# speed change is judged by numbers from the same run, docs/BENCHMARKS.md). Builds build-gpu/ from
# this tree (unless it is there; REBUILD=1: always), optionally runs gpu-labelled tests, benches
# `fp8rl bench rollout $ARGS` ("new"), then copies FILES from the older tree OLD over this one,
# rebuilds the binary (only what those files touch), benches again ("old"), puts this tree's files
# back, and prints both side by side (ab-tree-old-vs-new.md in $OUT). OLD is a source tree of the
# older commit carried with the working tree (an ignored folder: the machine's .git may be stale):
#   rm -rf .pd-base && mkdir .pd-base && git archive HEAD core rollout quant | tar -x -C .pd-base
#   OLD=.pd-base FILES="rollout/cuda/paged_decode.cu" ARGS="--configs fp8-kv --batch 64,256" bash scripts/gpu-ab-tree.sh
# TESTS, BUDGET, STEP_LIMIT as in gpu-ab.sh. PD_BENCH=1 also builds and runs the paged decode
# kernel alone, old against new (scripts/paged-decode-bench; PD_KV etc. filter it).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/gpu-plan-lib.sh"
old=$(cd "${OLD:?OLD: a source tree of the older commit}" && pwd)
[ -n "${FILES:-}" ] || { echo "FILES: the changed files, relative to the root"; exit 2; }
for f in $FILES; do
  [ -f "$old/$f" ] && [ -f "$root/$f" ] || { echo "FILES: $f is missing in $old or $root"; exit 2; }
done
if [ "${PD_BENCH:-0}" = 1 ]; then  # nvcc only: beside the main build
  BASE=$old OUTPUT=/tmp/pd_bench bash "$root/scripts/paged-decode-bench/build.sh" >"$out/pd-build.log" 2>&1 &
fi
build_test_and_wait
if [ "${PD_BENCH:-0}" = 1 ]; then
  if [ -x /tmp/pd_bench ]; then
    s=$(date +%s)
    timeout 240 /tmp/pd_bench >"$out/pd-bench.log" 2>&1
    echo "== pd_bench: rc $? in $(( $(date +%s) - s )) s"
    cat "$out/pd-bench.log"
  else
    echo "pd_bench did not build:"; tail -5 "$out/pd-build.log"
  fi
fi
limit=${STEP_LIMIT:-120}
bench() {  # $1 = name
  if [ "$(left)" -lt "$limit" ]; then echo "== $1 skipped: $(left) s left"; return 1; fi
  local s=$(date +%s)
  timeout "$limit" "$fp8rl" bench rollout --model "$model" ${ARGS:---batch 1,64 --gen-len 256} -o "$out/ab-tree-$1.md" >"$out/ab-tree-$1.log" 2>&1
  echo "== $1: rc $? in $(( $(date +%s) - s )) s"
  grep -E "^\| (bf16|fp8)" "$out/ab-tree-$1.md" 2>/dev/null
}
bench new || exit 0
keep=$(mktemp -d)
for f in $FILES; do mkdir -p "$keep/$(dirname "$f")"; cp "$root/$f" "$keep/$f"; cp "$old/$f" "$root/$f"; done
s=$(date +%s)
cmake --build "$root/build-gpu" --target fp8rl >"$out/rebuild-old.log" 2>&1
rc=$?
echo "== rebuild with the old files: rc $rc in $(( $(date +%s) - s )) s"
[ $rc -eq 0 ] && bench old
for f in $FILES; do cp "$keep/$f" "$root/$f"; done
if [ -s "$out/ab-tree-old.md" ] && [ -s "$out/ab-tree-new.md" ]; then
  echo "== old vs new, same call"
  compare "$out/ab-tree-old.md" "$out/ab-tree-new.md" | tee "$out/ab-tree-old-vs-new.md"
fi
echo "done at $(( $(date +%s) - t0 )) s"
