#!/usr/bin/env bash
# torch ships fmt v12 headers that shadow the distro's fmt v9 (which the distro's compiled
# spdlog needs). A source that includes both ATen/torch and fmt/spdlog compiles against the
# wrong fmt (GPU_MACHINE.md). core/util/log.h gives ATen code a logger and cat() instead.
# This check also catches a header that pulls one of them into an ATen file indirectly, for
# our own headers one level deep.
set -u
root=${1:-.}
cd "$root" || exit 1
status=0
aten_re='#include *[<"](ATen|torch|c10)/'
fmt_re='#include *[<"](fmt|spdlog)/'
files=$(find apps core quant loss rollout trainer tests -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)
[ -n "$files" ] || { echo "lint: no sources found under $root"; exit 1; }
for f in $files; do
  [ -f "$f" ] || continue
  text=$(cat "$f")
  # Include our headers one level deep.
  for h in $(grep -oE '#include "[^"]+"' "$f" | sed -E 's/#include "(.*)"/\1/'); do
    [ -f "$h" ] && text+=$'\n'$(cat "$h")
  done
  if grep -qE "$aten_re" <<<"$text" && grep -qE "$fmt_re" <<<"$text"; then
    echo "lint: $f includes ATen/torch and fmt/spdlog; use core/util/log.h (log::info, cat) in ATen code"
    status=1
  fi
done
[ $status -eq 0 ] && echo "lint: fmt/ATen separation holds in $(wc -w <<<"$files") files"
exit $status
