#!/usr/bin/env bash
# README command 1: set up, build and run the main job on the built-in tiny recipe.
# Until the RL loop lands this validates the recipe and prints the resolved config
# (`fp8rl check`); afterwards it will be `fp8rl train`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FP8RL_BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
"$build/apps/fp8rl" check "$root/recipes/quickstart-tiny.yaml" "$@"
