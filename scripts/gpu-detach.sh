#!/usr/bin/env bash
# On the GPU machine: runs a plan longer than one device call allows (600 s) by detaching it
# from the call. The first call starts PLAN in its own process session (it outlives the call
# while the machine stays warm); that call and each later one follow it for up to WAIT seconds
# (default 560), then hand back every log so far as $OUT/logs.tar.gz and print the plan's own
# output. Chain the calls back to back: an idle machine is given back within seconds.
#   bash scripts/gpu-detach.sh scripts/gpu-measure-switches.sh   # same line in every call
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=/tmp/fp8rl-detached
out=${OUT:-$root/gpu-logs}
mkdir -p "$out"
# A finished plan makes way for another one (or the same again with RESTART=1); a running one
# is followed whatever the call names.
if [ -f "$dir/done" ] && { [ "${RESTART:-0}" = 1 ] || [ "$(cat "$dir/plan-name" 2>/dev/null)" != "${1:-}" ]; }; then
  rm -rf "$dir"
fi
if [ ! -f "$dir/started" ]; then
  [ -f "${1:-}" ] || { echo "gpu-detach.sh: no plan script '${1:-}'"; exit 2; }
  mkdir -p "$dir/logs"
  # bash reads a script while it runs it; a later call's copy of the tree must not change it.
  # (The scripts a plan calls are read from the tree: change none of them between the calls.)
  cp "$1" "$dir/plan.sh"
  echo "$1" >"$dir/plan-name"
  FP8RL_ROOT=$root OUT=$dir/logs setsid bash -c "bash '$dir/plan.sh'; echo \$? >'$dir/done'" \
    >"$dir/logs/plan.log" 2>&1 </dev/null &
  date +%s >"$dir/started"
  echo "started $1 (logs in $dir/logs)"
elif [ "$(cat "$dir/plan-name")" != "${1:-}" ]; then
  echo "gpu-detach.sh: $(cat "$dir/plan-name") is still running; following it, not ${1:-}"
fi
s=$(date +%s)
while [ ! -f "$dir/done" ] && [ $(( $(date +%s) - s )) -lt "${WAIT:-560}" ]; do sleep 5; done
elapsed=$(( $(date +%s) - $(cat "$dir/started") ))
if [ -f "$dir/done" ]; then echo "plan finished (rc $(cat "$dir/done")) after $elapsed s"
else echo "plan still running after $elapsed s: call again to follow it"; fi
tar -czf "$out/logs.tar.gz" -C "$dir" logs
cat "$dir/logs/plan.log"
