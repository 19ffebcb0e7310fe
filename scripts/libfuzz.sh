#!/usr/bin/env bash
# Longer libFuzzer runs of every parser (README, "Fuzzing"), after a clang build:
#   CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DFP8RL_FUZZ=ON -DFP8RL_CUDA=OFF ...
#   ninja -C build-fuzz fp8rl_libfuzz_{recipe,overrides,config,tokenizer,chat,safetensors}
#   bash scripts/libfuzz.sh build-fuzz/tests/fuzz [RUNS_PER_PARSER=1000000] [JOBS=nproc]
# Seeds come from the repository (recipes, fixtures). Findings (crash-*, timeout-*, oom-*)
# land in $OUT/libfuzz/<parser>/ (or libfuzz-out/); the summary prints runs per parser.
set -u
bin=$(realpath "$1")
runs=${2:-1000000}
jobs=${3:-$(nproc)}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/libfuzz-out}/libfuzz
mkdir -p "$out"
seed_corpus() {
  local name=$1 dir=$2
  mkdir -p "$dir"
  case $name in
    recipe) cp "$root"/recipes/*.yaml "$dir"/ ;;
    overrides) printf 'rollout.n=8' >"$dir/a"; printf 'quantization.weight_block_size=[128, 128]' >"$dir/b"
               printf 'reward.pattern=^\\d+$' >"$dir/c"; printf 'algorithm.clip_ratio_c=null' >"$dir/d" ;;
    config) for m in qwen3 qwen2 llama; do cp "$root/tests/data/models/$m/config.json" "$dir/$m"; done ;;
    tokenizer) for t in qwen2 llama3; do cp "$root/tests/data/tokenizers/$t/tokenizer.json" "$dir/$t"; done ;;
    checkpoint) printf '%s' '{"step": 7, "files": {"policy.safetensors": {"bytes": 100, "crc32c": "00000000"}}, "complete": true}' >"$dir/m" ;;
    prompts) printf '%s\n' '{"prompt": "1+1=", "answer": "2"}' '{"messages": [{"role": "user", "content": "hi"}]}' >"$dir/p" ;;
    chat) printf '%s' '{"chat_template": "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"}' >"$dir/c" ;;
    safetensors) python3 - "$dir/s" <<'PY'
import json, struct, sys
h = json.dumps({"__metadata__": {"format": "pt"}, "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + bytes(20))
PY
    ;;
  esac
}
status=0
per_job=$(( (runs + jobs - 1) / jobs ))
for name in ${FUZZ_TARGETS:-config overrides recipe chat safetensors tokenizer prompts checkpoint}; do
  dir="$out/$name"
  mkdir -p "$dir/corpus" && seed_corpus "$name" "$dir/corpus"
  (cd "$dir" && "$bin/fp8rl_libfuzz_$name" -jobs="$jobs" -workers="$jobs" -runs="$per_job" -max_total_time=${FUZZ_MAX_SECONDS:-300} \
     -rss_limit_mb=2048 -timeout=20 -max_len=65536 corpus >/dev/null 2>&1)
  done_runs=$(cat "$dir"/fuzz-*.log 2>/dev/null | grep -oE '^Done [0-9]+ runs' | awk '{s += $2} END {print s + 0}')
  findings=$(ls "$dir" | grep -cE '^(crash|timeout|oom|leak)-')
  echo "$name: $done_runs runs in $jobs jobs, $findings findings"
  [ "$findings" -eq 0 ] || status=1
done
exit $status
