#!/usr/bin/env bash
# On the GPU machine: RL step time and peak memory of a Qwen3-shape model (random weights) with
# FP8 LoRA against the same recipe with BF16 weights, in one call, on the same card.
# Random weights never emit EOS, so every response is max_response_length tokens: a fixed amount
# of work per step. Prints a Markdown table (medians over the steps after the first; with one
# step, that step) to stdout.
#   FP8RL_BUILD_DIR=... bash scripts/gpu-bench-train.sh [extra overrides...]
# PRESET (8b), STEPS (4), RESPONSE (512 tokens), TRAIN_LABEL (the table's title for what trains,
# "LoRA r32"), RUNS ("fp8 bf16": which of the two to run, at the recipe's defaults; a name ending
# in "+kept" or "+per-rollout" sets rollout.keep_decode_graphs true or false, e.g.
# RUNS="fp8+per-rollout fp8+kept": decode graphs captured per rollout against kept across the
# steps, whose per-step mismatch should then be alike).
# FP8_INIT=1 writes the random model with its projections already in FP8 (`fp8rl init --fp8
# --device cuda`): half the disk of a BF16 checkpoint, which is what lets a Qwen3-32B shape
# (61 GiB in BF16) be written at all on a 64 GiB disk. Its BF16 run then loads the same FP8 file
# dequantized (quantization.modules_in_bf16: ['*'], every projection a dense BF16 linear), since
# quant_method: none refuses FP8 tensors; without FP8_INIT the BF16 run is quant_method: none on
# a BF16 checkpoint. Longer responses and fewer samples, e.g. for the 32B fit at 8K tokens:
#   PRESET=32b FP8_INIT=1 STEPS=1 RESPONSE=8192 RUNS=fp8 bash scripts/gpu-bench-train.sh \
#     rollout.n=2 data.train_batch_size=1 trainer.ppo_mini_batch_size=1 trainer.ppo_micro_batch_size_per_gpu=1
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${FP8RL_BUILD_DIR:-$root/build-gpu}/apps/fp8rl
work=${WORK_DIR:-/tmp/fp8rl-bench-train}
preset=${PRESET:-8b}
steps=${STEPS:-4}
runs=${RUNS:-"fp8 bf16"}
device=${DEVICE:-cuda}  # DEVICE=cpu PRESET=tiny: a dry run of the plumbing on a CPU build
mkdir -p "$work"
if [ "${FP8_INIT:-0}" = 1 ]; then
  model=$work/model-$preset-fp8
  [ -f "$model/model.safetensors" ] || "$bin" init --preset "$preset" --fp8 --device "$device" --out "$model" --seed 1 >&2
  bf16=(quantization.quant_method=fp8 "quantization.modules_in_bf16=[\"*\"]")
else
  model=$work/model-$preset
  [ -f "$model/model.safetensors" ] || "$bin" init --preset "$preset" --device "$device" --out "$model" --seed 1 >&2
  bf16=(quantization.quant_method=none)
fi
common=(model.init_preset= model.path="$model" model.dtype=bfloat16 trainer.device="$device"
        lora.rank=32 lora.alpha=64 rollout.n=8 rollout.max_response_length=${RESPONSE:-512} data.train_batch_size=8
        data.synthetic_num_prompts=64 trainer.ppo_mini_batch_size=8 trainer.ppo_micro_batch_size_per_gpu=8
        trainer.total_training_steps=$steps checkpoint.save_freq=0 sft.steps=0 trainer.output_dir="$work/runs"
        logging.logger=[jsonl])
for q in $runs; do
  case ${q%+*} in
    fp8) precision=(quantization.quant_method=fp8) ;;
    bf16) precision=("${bf16[@]}") ;;
    *) echo "RUNS: '$q' is not fp8 or bf16 (+kept, +per-rollout)" >&2; exit 2 ;;
  esac
  case $q in
    *+kept) precision+=(rollout.keep_decode_graphs=true) ;;
    *+per-rollout) precision+=(rollout.keep_decode_graphs=false) ;;
    *+*) echo "RUNS: '$q': the suffix is +kept or +per-rollout" >&2; exit 2 ;;
  esac
  rm -rf "$work/runs/$q"
  "$bin" train "$root/recipes/quickstart-tiny.yaml" "${common[@]}" "${precision[@]}" trainer.experiment_name=$q "$@" \
    >"$work/$q.log" 2>&1 || { tail -5 "$work/$q.log" >&2; exit 1; }
done
python3 - "$work/runs" "$preset" $runs <<'PY'
import json, os, statistics, sys
runs, preset, names = sys.argv[1], sys.argv[2], sys.argv[3:]
keys = ["timing_s/step", "timing_s/rollout", "timing_s/old_log_prob", "timing_s/update", "perf/rollout_tokens_per_s",
        "memory/rollout_peak_gib", "memory/old_log_prob_peak_gib", "memory/update_peak_gib",
        "memory/reserved_gib",  # the caching allocator's held bytes (CUDA only)
        "rollout_corr/k3_kl", "actor/grad_norm"]  # stale weights in a rollout would show here
every = {q: [json.loads(l) for l in open(f"{runs}/{q}/metrics.jsonl")] for q in names}
m = {q: every[q][1:] or every[q] for q in names}  # the first step warms allocators and cuBLASLt plans up
keys = [k for k in keys if all(k in m[q][0] for q in names)]
med = {q: {k: statistics.median(x[k] for x in m[q]) for k in keys} for q in m}
first = m[names[0]][0]
pair = names == ["fp8", "bf16"]  # then a column of FP8's gain: BF16 / FP8 (for tokens/s, FP8 / BF16)
print(f"| Qwen3-{preset} shape, {os.environ.get('TRAIN_LABEL', 'LoRA r32')}, {first['response_length/mean']:.0f} tokens per response | "
      + " | ".join(n.upper() for n in names) + (" | FP8's gain |" if pair else " |"))
print("|---" * (len(names) + 1 + pair) + "|")
for k in keys:
    vals = [med[q][k] for q in names]
    ratio = ""
    if pair:
        num, den = (vals[0], vals[1]) if k.startswith("perf/") else (vals[1], vals[0])
        ratio = f" | {num / den if den else float('nan'):.2f}x"
    print(f"| {k} | " + " | ".join(f"{v:.4g}" for v in vals) + ratio + " |")
# Every step (the first too) of what stale weights in a rollout would change: the rollout's
# log-prob mismatch against the trainer and the gradient norm.
print()
print("| step | " + " | ".join(f"{n} k3 KL | {n} grad norm" for n in names) + " |")
print("|---" * (1 + 2 * len(names)) + "|")
for i in range(max(len(v) for v in every.values())):
    cells = []
    for q in names:
        x = every[q][i] if i < len(every[q]) else {}
        cells += [f"{x.get('rollout_corr/k3_kl', float('nan')):.6g}", f"{x.get('actor/grad_norm', float('nan')):.6g}"]
    print(f"| {i + 1} | " + " | ".join(cells) + " |")
PY
