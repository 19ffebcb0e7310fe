#!/usr/bin/env bash
# The FP8-vs-BF16 experiment (docs/EXPERIMENT.md) on the GPU machine, after a CUDA build:
#   1. one supervised warm-up of the 76M model (recipes/addition-76m-fp8.yaml's sft section),
#      repeated from its own output while its greedy accuracy is below 0.15 (3 rounds at most),
#      so every run starts from the same weights and the same skill;
#   2. the runs, all at once on the one GPU (each process capped by rollout.gpu_memory_utilization):
#      (a) BF16                       recipes/addition-76m-bf16.yaml
#      (b) FP8 rollout, BF16 trainer forward, token TIS   recipes/addition-76m-fp8.yaml
#      (c) as (b) without TIS         algorithm.tis_level=none
#      (d) FP8 everywhere, token TIS  trainer.forward_precision=fp8
#      for each seed in $SEEDS (trainer.seed and data.seed), and once
#      (e) LoRA r32 on the FP8 base and on the BF16 base (LORA_RUNS=0 leaves them out);
#      RUNS (default "a b c d") picks among (a)-(d) and their FP8 KV cache variants akv, bkv, dkv
#      (rollout.kv_cache_dtype=fp8: the mismatch KL an FP8 cache adds, against (a), (b), (d));
#      every process holds ~10 GiB of GPU memory whatever MEM_FRACTION says (H200, 76m model),
#      so 12 processes at most fit a 141 GB card, 7 an 80 GB one;
#      a run still going after $DEADLINE seconds gets SIGINT (it checkpoints and stops; compare
#      marks it in progress);
#   3. `fp8rl eval` of every final checkpoint through one dense BF16 evaluator (eval.json per run);
#   4. `fp8rl compare` of the runs (summary and $OUT/experiment-report.html); metrics.jsonl, resolved_recipe.yaml and the log of each run
#      packed into $OUT/experiment-runs.tar.gz, the summary into $OUT/experiment-summary.txt.
# TIMING_STEPS=N adds step 2b (uncontended timing runs). A CPU dry run of the plumbing: DEVICE=cpu PRESET=tiny DTYPE=float32 STEPS=3 SEEDS=1 bash scripts/gpu-experiment.sh
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${FP8RL_BIN:-${FP8RL_BUILD_DIR:-$root/build-gpu}/apps/fp8rl}
out=${OUT:-$root/gpu-logs}
runs=${RUNS_DIR:-/tmp/fp8rl-experiment}
steps=${STEPS:-60}
seeds=${SEEDS:-"1 2"}
device=${DEVICE:-cuda}
deadline=${DEADLINE:-900}
mem=${MEM_FRACTION:-0.07}
fp8=$root/recipes/addition-76m-fp8.yaml
bf16=$root/recipes/addition-76m-bf16.yaml
mkdir -p "$out" "$runs"
base=(trainer.device="$device" trainer.output_dir="$runs" model.dtype="${DTYPE:-bfloat16}")

# 1. warm-up
model_args=(model.init_preset="${PRESET:-76m}")
for round in 1 2 3; do
  "$bin" sft "$fp8" "${base[@]}" "${model_args[@]}" trainer.experiment_name="warmup$round" >"$runs/warmup$round.log" 2>&1 \
    || { tail -5 "$runs/warmup$round.log"; echo "warm-up failed" >&2; exit 1; }
  acc=$(sed -n 's/.*greedy accuracy on the first [0-9]* prompts: \([0-9.e-]*\).*/\1/p' "$runs/warmup$round.log" | tail -1)
  echo "warm-up round $round: greedy accuracy $acc" | tee -a "$out/experiment-summary.txt"
  model_args=(model.path="$runs/warmup$round/model" model.init_preset=)
  python3 -c "import sys; sys.exit(0 if float('$acc') >= 0.15 else 1)" && break
done
"$bin" data addition -o "$runs/val.jsonl" --count 256 --seed 777 >/dev/null  # held-out prompts (a seed apart)

# 2. the runs (END_AT, seconds since the epoch: stop them 90 s before it, whatever DEADLINE says,
#    leaving time to score and pack them)
if [ -n "${END_AT:-}" ]; then deadline=$((END_AT - $(date +%s) - 90)); fi
echo "runs: $steps steps, stopped after $deadline s at most" | tee -a "$out/experiment-summary.txt"
common=("${base[@]}" "${model_args[@]}" sft.steps=0 data.val_files=["$runs/val.jsonl"] trainer.test_freq=10
        trainer.total_training_steps="$steps" rollout.gpu_memory_utilization="$mem" checkpoint.save_freq=0)
names=()
launch() {
  local name=$1 recipe=$2
  shift 2
  names+=("$name")
  timeout -s INT -k 60 "$deadline" "$bin" train "$recipe" "${common[@]}" trainer.experiment_name="$name" "$@" \
    >"$runs/$name.log" 2>&1 &
}
kv=(rollout.kv_cache_dtype=fp8)
for s in $seeds; do
  seed=(trainer.seed="$s" data.seed="$s")
  for r in ${RUNS:-a b c d}; do
    case $r in
      a) launch "a-bf16-s$s" "$bf16" "${seed[@]}" ;;
      b) launch "b-fp8-bf16fwd-tis-s$s" "$fp8" "${seed[@]}" ;;
      c) launch "c-fp8-bf16fwd-notis-s$s" "$fp8" "${seed[@]}" algorithm.tis_level=none ;;
      d) launch "d-fp8-fp8fwd-tis-s$s" "$fp8" "${seed[@]}" trainer.forward_precision=fp8 ;;
      akv) launch "akv-bf16-fp8kv-s$s" "$bf16" "${seed[@]}" "${kv[@]}" ;;
      bkv) launch "bkv-fp8-fp8kv-bf16fwd-tis-s$s" "$fp8" "${seed[@]}" "${kv[@]}" ;;
      dkv) launch "dkv-fp8-fp8kv-fp8fwd-tis-s$s" "$fp8" "${seed[@]}" "${kv[@]}" trainer.forward_precision=fp8 ;;
      *) echo "RUNS: unknown run '$r' (a b c d akv bkv dkv)" >&2; exit 2 ;;
    esac
  done
done
if [ "${LORA_RUNS:-1}" = 1 ]; then
  lora=(lora.rank=32 lora.alpha=64 trainer.lr=5e-4)
  first=${seeds%% *}
  launch "e-lora-fp8-s$first" "$fp8" trainer.seed="$first" data.seed="$first" "${lora[@]}"
  launch "e-lora-bf16-s$first" "$bf16" trainer.seed="$first" data.seed="$first" "${lora[@]}"
fi
wait
for n in "${names[@]}"; do echo "$n: $(tail -1 "$runs/$n.log")"; done >>"$out/experiment-summary.txt"

# 2b. TIMING_STEPS > 0: (a), (b) and (d) once more, one at a time with the GPU to themselves, for
#     step-time and rollout tokens/s ratios the concurrent runs cannot give (compare t-* runs).
if [ "${TIMING_STEPS:-0}" -gt 0 ]; then
  for t in "t-a-bf16 $bf16" "t-b-fp8-bf16fwd $fp8" "t-d-fp8-fp8fwd $fp8 trainer.forward_precision=fp8"; do
    set -- $t
    name=$1 recipe=$2
    shift 2
    "$bin" train "$recipe" "${common[@]}" trainer.experiment_name="$name" trainer.total_training_steps="$TIMING_STEPS" \
      rollout.gpu_memory_utilization=0.6 trainer.test_freq=0 "$@" >"$runs/$name.log" 2>&1
    echo "$name: $(tail -1 "$runs/$name.log")" >>"$out/experiment-summary.txt"
  done
  "$bin" compare "$runs/t-a-bf16" "$runs/t-b-fp8-bf16fwd" "$runs/t-d-fp8-fp8fwd" --window "$TIMING_STEPS" \
    >>"$out/experiment-summary.txt" 2>&1
fi

# 3. every final checkpoint scored by one evaluator (dense BF16, greedy, the same prompts), so the
#    precision a run validated in does not move its score
for n in "${names[@]}"; do
  "$bin" eval "$runs/$n" trainer.device="$device" -o "$runs/$n/eval.json" >/dev/null 2>"$runs/$n.eval.log" \
    && echo "eval $n: $(cat "$runs/$n/eval.json")" || echo "eval $n: failed ($(tail -1 "$runs/$n.eval.log"))"
done >>"$out/experiment-summary.txt"

# 4. compare and pack
dirs=()
for n in "${names[@]}"; do dirs+=("$runs/$n"); done
"$bin" compare "${dirs[@]}" --window 10 --smooth 5 -o "$out/experiment-report.html" >>"$out/experiment-summary.txt" 2>&1
(cd "$runs" && tar -czf "$out/experiment-runs.tar.gz" val.jsonl ./*.log \
  $(for n in "${names[@]}"; do echo "$n/metrics.jsonl $n/resolved_recipe.yaml $n/eval.json"; done) 2>/dev/null)
cat "$out/experiment-summary.txt"
