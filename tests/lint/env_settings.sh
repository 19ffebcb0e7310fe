#!/usr/bin/env bash
# Every FP8RL_* setting the sources read (env_switch, env_int, EnvToggle) is listed in
# core/util/env.cpp's kEnvSettings with the range it is read with, which `fp8rl` checks at startup, and every listed one is read
# somewhere: a setting missing from the list would be checked only at its first read, after a
# model has loaded, and a stale entry would accept a variable nothing reads.
set -u
root=${1:-.}
cd "$root" || exit 1
# The matches of pattern $1 in the sources that read settings.
in_sources() { grep -rhoE "$1" core rollout trainer loss quant apps --include='*.cpp' --include='*.h' --include='*.cu'; }
# "lo hi" as the table lists setting $1 (empty if it is not listed).
listed_range() { grep -oE "\{\"$1\", -?[0-9]+, -?[0-9]+\}" core/util/env.cpp | grep -oE -- '-?[0-9]+, -?[0-9]+' | tr -d ','; }
read_names=$(in_sources '(env_switch|env_int|EnvToggle [A-Za-z_0-9]+)\("FP8RL_[A-Z0-9_]+"' |
             grep -oE 'FP8RL_[A-Z0-9_]+' | sort -u)
listed=$(sed -n '/kEnvSettings\[\] = {/,/^};/p' core/util/env.cpp | grep -oE '"FP8RL_[A-Z0-9_]+"' | tr -d '"' | sort -u)
[ -n "$read_names" ] && [ -n "$listed" ] || { echo "lint: found no FP8RL_ settings (read: '$read_names', listed: '$listed')"; exit 1; }
missing=$(comm -23 <(echo "$read_names") <(echo "$listed"))
stale=$(comm -13 <(echo "$read_names") <(echo "$listed"))
if [ -n "$missing$stale" ]; then
  [ -n "$missing" ] && echo "lint: read but not in core/util/env.cpp's kEnvSettings:" $missing
  [ -n "$stale" ] && echo "lint: in kEnvSettings but read nowhere:" $stale
  exit 1
fi
# The ranges too: each env_int("FP8RL_X", lo, hi) call reads the range the table lists for it
# (env_switch and EnvToggle settings are 0-1).
bad=
while read -r name lo hi; do
  row=$(listed_range "$name")
  [ "$row" = "$lo $hi" ] || bad="$bad $name (read as $lo-$hi, listed as ${row:-?})"
done < <(in_sources 'env_int\("FP8RL_[A-Z0-9_]+", -?[0-9]+, -?[0-9]+\)' |
         sed -E 's/env_int\("([A-Z0-9_]+)", (-?[0-9]+), (-?[0-9]+)\)/\1 \2 \3/')
while read -r name; do
  row=$(listed_range "$name")
  [ "$row" = "0 1" ] || bad="$bad $name (a 0-1 switch, listed as ${row:-?})"
done < <(in_sources '(env_switch|EnvToggle [A-Za-z_0-9]+)\("FP8RL_[A-Z0-9_]+"' | grep -oE 'FP8RL_[A-Z0-9_]+' | sort -u)
if [ -n "$bad" ]; then
  echo "lint: ranges in core/util/env.cpp's kEnvSettings that differ from the reads:$bad"
  exit 1
fi
echo "lint: all $(echo "$listed" | wc -l) FP8RL_ settings listed for the startup check, with the ranges they are read with"
