#!/usr/bin/env bash
# On the GPU machine, after scripts/gpu-test.sh built build-gpu: the quickstart recipe on the GPU
# in FP8 with LoRA, and with full fine-tuning in both trainer forward precisions, plus its BF16
# baseline. Each run's log and metrics.jsonl go to $OUT/train-<name>/, a summary to
# $OUT/train-summary.txt.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/gpu-logs}
bin=${FP8RL_BUILD_DIR:-$root/build-gpu}/apps/fp8rl
steps=${STEPS:-40}
extra=()
[ -n "${SFT_STEPS:-}" ] && extra+=(sft.steps="$SFT_STEPS")  # a shorter warm-up for a quick check
runs=${RUNS_DIR:-/tmp/fp8rl-gpu-runs}  # run directories (init/sft models, checkpoints) stay off $OUT
run() {
  local name=$1
  shift
  mkdir -p "$out/train-$name"
  "$bin" train "$root/recipes/quickstart-tiny.yaml" trainer.device=cuda trainer.output_dir="$runs" \
    trainer.experiment_name="$name" trainer.total_training_steps="$steps" checkpoint.save_freq=0 "${extra[@]}" "$@" \
    >"$out/train-$name/log.txt" 2>&1
  echo "$name: exit $?" | tee -a "$out/train-summary.txt"
  cp "$runs/$name/metrics.jsonl" "$out/train-$name/" 2>/dev/null
  python3 - "$out/train-$name/metrics.jsonl" <<'PY' | tee -a "$out/train-summary.txt"
import json, sys
try:
    m = [json.loads(l) for l in open(sys.argv[1])]
except OSError:
    sys.exit(0)
a = [x["score/accuracy"] for x in m]
k = min(10, len(a))
print(f"  accuracy first {k}: {sum(a[:k]) / k:.3f}  last {k}: {sum(a[-k:]) / k:.3f}; "
      f"mismatch kl {sum(x['rollout_corr/kl'] for x in m) / len(m):.2e}; "
      f"step {sum(x['timing_s/step'] for x in m) / len(m):.2f} s")
PY
}
run fp8-lora
run fp8-full-bf16fwd lora.rank=0 trainer.lr=1e-4 trainer.forward_precision=bf16
run fp8-full-fp8fwd lora.rank=0 trainer.lr=1e-4 trainer.forward_precision=fp8
run bf16-lora quantization.quant_method=none
