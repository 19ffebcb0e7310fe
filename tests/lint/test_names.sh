#!/usr/bin/env bash
# catch_discover_tests splits a test name at ';' (a CMake list separator): such a TEST_CASE
# becomes two ctest entries that match nothing, and ctest counts "no tests ran" as a pass, so the
# test silently never runs. Names must not hold ';'.
set -u
root=${1:-.}
cd "$root" || exit 1
bad=$(grep -rnE 'TEST_CASE\("[^"]*;' tests --include='*.cpp')
if [ -n "$bad" ]; then
  echo "lint: test names with ';' (ctest would split them and never run them):"
  echo "$bad"
  exit 1
fi
echo "lint: no ';' in test names"
