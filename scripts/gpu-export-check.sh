#!/usr/bin/env bash
# On the GPU machine (transformers installed): a short quickstart run with LoRA, `fp8rl export`,
# then scripts/check_export_with_hf.py (transformers, and peft when present). Logs to $OUT.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/gpu-logs}
bin=${FP8RL_BUILD_DIR:-$root/build-gpu}/apps/fp8rl
work=${WORK_DIR:-/tmp/fp8rl-export-check}
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$bin" train "$root/recipes/quickstart-tiny.yaml" trainer.output_dir=runs trainer.experiment_name=run \
  trainer.device=cpu sft.steps=100 trainer.total_training_steps=4 trainer.lr=0.02 >train.log 2>&1 || { tail -5 train.log; exit 1; }
"$bin" export runs/run -o exported || exit 1
"$bin" data addition -o prompts.jsonl --count 8 --seed 5
"$bin" generate --model exported --quantization none --dtype float32 --device cpu --temperature 0 --max-new-tokens 6 \
  --prompts prompts.jsonl -o generated.jsonl 2>gen.log || { tail -3 gen.log; exit 1; }
python3 -c "import transformers, torch; print('transformers', transformers.__version__)"
python3 -c "import peft; print('peft', peft.__version__)" 2>/dev/null || echo "peft: not installed"
python3 "$root/scripts/check_export_with_hf.py" --export exported --generated generated.jsonl --prompts prompts.jsonl \
  --base runs/run/sft_model
