#!/usr/bin/env bash
# README command 1: set up, build and train on the built-in quickstart recipe: a tiny Qwen3
# learns two-digit addition (a supervised warm-up, then GRPO with FP8 rollouts and LoRA on the
# shared FP8 weights). CPU or GPU; no downloads; about two minutes on a 2-core CPU. The run
# lands in runs/quickstart-tiny (metrics.jsonl, TensorBoard events, checkpoints); run it again
# with --resume auto to continue, or with trainer.experiment_name=NAME for a fresh run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FP8RL_BUILD_DIR:-$root/build}
bash "$root/scripts/setup.sh"
cd "$root"
"$build/apps/fp8rl" train "$root/recipes/quickstart-tiny.yaml" "$@"
