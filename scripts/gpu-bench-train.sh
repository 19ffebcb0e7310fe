#!/usr/bin/env bash
# On the GPU machine: RL step time and peak memory of a Qwen3-8B-shape model (random weights) with
# FP8 LoRA against the same recipe with quant_method: none, in one call, on the same card.
# Random weights never emit EOS, so every response is max_response_length tokens: a fixed amount
# of work per step. Prints a Markdown table (medians over the steps after the first) to stdout.
#   FP8RL_BUILD_DIR=... bash scripts/gpu-bench-train.sh [extra overrides...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${FP8RL_BUILD_DIR:-$root/build-gpu}/apps/fp8rl
work=${WORK_DIR:-/tmp/fp8rl-bench-train}
preset=${PRESET:-8b}
steps=${STEPS:-4}
mkdir -p "$work"
[ -f "$work/model-$preset/model.safetensors" ] || "$bin" init --preset "$preset" --out "$work/model-$preset" --seed 1 >&2
common=(model.init_preset= model.path="$work/model-$preset" model.dtype=bfloat16 trainer.device=cuda
        lora.rank=32 lora.alpha=64 rollout.n=8 rollout.max_response_length=${RESPONSE:-512} data.train_batch_size=8
        data.synthetic_num_prompts=64 trainer.ppo_mini_batch_size=8 trainer.ppo_micro_batch_size_per_gpu=8
        trainer.total_training_steps=$steps checkpoint.save_freq=0 sft.steps=0 trainer.output_dir="$work/runs"
        logging.logger=[jsonl])
for q in fp8 none; do
  rm -rf "$work/runs/$q"
  "$bin" train "$root/recipes/quickstart-tiny.yaml" "${common[@]}" quantization.quant_method=$q \
    trainer.experiment_name=$q "$@" >"$work/$q.log" 2>&1 || { tail -5 "$work/$q.log" >&2; exit 1; }
done
python3 - "$work/runs" "$preset" <<'PY'
import json, statistics, sys
runs, preset = sys.argv[1], sys.argv[2]
keys = ["timing_s/step", "timing_s/rollout", "timing_s/old_log_prob", "timing_s/update", "perf/rollout_tokens_per_s",
        "memory/rollout_peak_gib", "memory/update_peak_gib"]
m = {q: [json.loads(l) for l in open(f"{runs}/{q}/metrics.jsonl")][1:] for q in ("fp8", "none")}
med = {q: {k: statistics.median(x[k] for x in m[q]) for k in keys} for q in m}
print(f"| Qwen3-{preset} shape, LoRA r32, 8 prompts x 8 samples x {m['fp8'][0]['response_length/mean']:.0f} tokens "
      f"| FP8 (quant_method fp8) | BF16 (none) | BF16 / FP8 |")
print("|---|---|---|---|")
for k in keys:
    a, b = med["fp8"][k], med["none"][k]
    print(f"| {k} | {a:.3f} | {b:.3f} | {b / a if a else float('nan'):.2f}x |")
PY
