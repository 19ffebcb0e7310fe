#!/usr/bin/env bash
# README command 1's promise, as a test: the quickstart recipe (warm-up, then GRPO with FP8
# rollouts and LoRA on the shared FP8 weights), seeded, on CPU, raises the tiny model's accuracy.
# Shortened to 40 RL steps; passes when the mean accuracy of the last 10 steps beats the first 10
# by at least 0.05. Usage: test_quickstart_learns.sh <fp8rl binary> <project root>
set -euo pipefail
bin=$(realpath "$1")
root=$(realpath "$2")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
"$bin" train "$root/recipes/quickstart-tiny.yaml" trainer.output_dir=runs trainer.device=cpu \
  trainer.total_training_steps=40 checkpoint.save_freq=0 logging.logger=[jsonl] >log.txt 2>&1 \
  || { tail -20 log.txt; exit 1; }
python3 - runs/quickstart-tiny/metrics.jsonl <<'PY'
import json, sys
acc = [json.loads(l)["score/accuracy"] for l in open(sys.argv[1])]
first, last = sum(acc[:10]) / 10, sum(acc[-10:]) / 10
print(f"accuracy: first 10 steps {first:.3f}, last 10 steps {last:.3f} ({len(acc)} steps)")
sys.exit(0 if len(acc) == 40 and last >= first + 0.05 else 1)
PY
