#!/usr/bin/env bash
# The fp8rl CLI as a user runs it: exit codes (0 ok, 2 usage/config, 1 runtime) and one-line
# errors that name the file/key. Usage: test_cli.sh <fp8rl binary> <project root>
set -u
bin=$(realpath "$1")
root=$(realpath "$2")
tmp=$(mktemp -d)
bg=  # the background train of the Ctrl-C check: never left running, whatever ends this script
trap '[ -n "$bg" ] && kill -TERM "$bg" 2>/dev/null; rm -rf "$tmp"' EXIT  # timeout passes TERM on
cd "$tmp" || exit 1
fails=0
passes=0

# expect <code> <stderr substring or ''> -- args...
expect() {
  local want=$1 needle=$2
  shift 3
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  local ok=1
  [ "$got" -eq "$want" ] || ok=0
  if [ -n "$needle" ] && ! grep -qF -- "$needle" "$tmp/err" "$tmp/out"; then ok=0; fi
  # Errors are one line: no stack traces, no multi-line dumps on stderr.
  if [ "$want" -ne 0 ] && [ "$(grep -c '^fp8rl: error: ' "$tmp/err")" -ne 1 ]; then ok=0; fi
  if [ $ok -eq 1 ]; then
    passes=$((passes + 1))
  else
    fails=$((fails + 1))
    echo "FAIL: fp8rl $* -> exit $got (want $want, '$needle')"
    sed 's/^/  stderr: /' "$tmp/err" | head -5
  fi
}

tiny=$root/recipes/quickstart-tiny.yaml
cat >bad-key.yaml <<'Y'
base: RECIPE
rollout:
  nn: 4
Y
sed -i "s#RECIPE#$tiny#" bad-key.yaml
cat >bad-cap.yaml <<Y
base: $tiny
algorithm:
  tis_cap: 0.9
Y
printf 'rollout:\n  n: [1\n' >broken.yaml

expect 0 ''                      -- --help
expect 0 ''                      -- check --help
expect 0 ''                      -- train --help
expect 0 'fp8rl'                 -- --version
expect 2 ''                      --
expect 2 "unknown subcommand 'frobnicate'" -- frobnicate
expect 2 "did you mean 'check'" -- chek
expect 2 '--nope'                -- check --keys --nope
expect 0 'rollout.n'             -- check --keys
expect 0 'resolved recipe'       -- check "$tiny"
expect 0 'precision plan: 14 of 28 decoder linears in FP8' -- check "$tiny"
expect 0 'precision plan: 0 of 28'  -- check "$root/recipes/quickstart-tiny-bf16.yaml"
expect 2 "pattern 'x' matches no module" -- check "$tiny" 'quantization.modules_in_bf16=[x]'
expect 0 'n: 3'                  -- check "$tiny" rollout.n=3
expect 2 "bad-key.yaml:3: unknown key 'rollout.nn' (did you mean 'rollout.n'?)" -- check bad-key.yaml
expect 2 'bad-cap.yaml:3: algorithm.tis_cap'                                  -- check bad-cap.yaml
expect 2 'broken.yaml:'          -- check broken.yaml
expect 2 'no such recipe file'   -- check missing.yaml
expect 2 "did you mean 'trainer.lr'"  -- check "$tiny" trainer.lrr=1
expect 2 'expected an integer'   -- check "$tiny" rollout.n=x
expect 2 ''                      -- train
expect 2 'algorithm.tis_cap'     -- train bad-cap.yaml trainer.output_dir=runs

# train runs the quickstart (shortened): warm-up, RL steps, checkpoint, exit 0.
short=(sft.steps=3 sft.batch_size=4 trainer.total_training_steps=2 data.synthetic_num_prompts=8 data.train_batch_size=4
       trainer.ppo_mini_batch_size=4 rollout.n=2 rollout.max_response_length=4)
expect 0 'finished 2 steps' -- train "$tiny" trainer.output_dir=runs "${short[@]}"
[ -f runs/quickstart-tiny/resolved_recipe.yaml ] && [ -d runs/quickstart-tiny/checkpoints/step_00000002 ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: no resolved_recipe.yaml or checkpoint in the run dir"; }
# Finished work is protected unless resuming; --resume auto continues from the last checkpoint.
expect 2 'already holds a run'   -- train "$tiny" trainer.output_dir=runs "${short[@]}"
expect 0 'resumed from'          -- train "$tiny" trainer.output_dir=runs "${short[@]}" trainer.total_training_steps=3 --resume auto
[ "$(wc -l <runs/quickstart-tiny/metrics.jsonl)" -eq 3 ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: metrics.jsonl should hold 3 steps after the resume"; }
# Validation on a JSONL file written by `fp8rl data`: a step-0 line, then every test_freq steps.
expect 0 ''                      -- data addition -o val.jsonl --count 6 --seed 9
expect 0 'validation before training' -- train "$tiny" trainer.output_dir=runs-val "${short[@]}" trainer.test_freq=1 data.val_files=[val.jsonl]
python3 -c "
import json
m = [json.loads(l) for l in open('runs-val/quickstart-tiny/metrics.jsonl')]
assert [x['step'] for x in m] == [0, 1, 2] and all('val/accuracy' in x for x in m), m
" && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: validation metrics missing"; }
# compare: the keys that differ, the metrics side by side; a torn metrics line is skipped with its location.
expect 0 'trainer.test_freq' -- compare runs/quickstart-tiny runs-val/quickstart-tiny
expect 0 'score/accuracy'    -- compare runs/quickstart-tiny runs-val/quickstart-tiny
cp -r runs-val/quickstart-tiny torn && printf '{"step": 3, "reward/me' >>torn/metrics.jsonl
expect 0 'metrics.jsonl:4: not a metrics line' -- compare runs/quickstart-tiny torn
expect 2 'is not a run directory' -- compare runs/quickstart-tiny plain-file-dir
expect 2 'does not exist' -- compare runs/quickstart-tiny -o no-such-dir/report.html
expect 0 'report: r.html' -- compare runs/quickstart-tiny runs-val/quickstart-tiny -o r.html
# A malformed training line stops at file:line, or with data.skip_malformed is skipped and counted.
printf '{"prompt": "1+2=", "answer": "3"}\nnot json\n{"prompt": "2+2=", "answer": "4"}\n' >mixed.jsonl
jsonl=(data.synthetic_task= data.train_files=[mixed.jsonl] reward.type=exact_match)
expect 2 'mixed.jsonl:2: not valid JSON' -- train "$tiny" trainer.output_dir=runs-mixed "${short[@]}" "${jsonl[@]}"
expect 0 'skipped 1 malformed line' -- train "$tiny" trainer.output_dir=runs-mixed "${short[@]}" "${jsonl[@]}" data.skip_malformed=true
# exact_match compares with each line's answer: a line without one is refused, not scored against "".
printf '{"prompt": "1+2=", "answer": "3"}\n{"prompt": "2+2="}\n' >noanswer.jsonl
expect 2 'noanswer.jsonl:2: no reference answer under "answer" (reward.answer_key)' -- train "$tiny" trainer.output_dir=runs-noanswer "${short[@]}" data.synthetic_task= data.train_files=[noanswer.jsonl] reward.type=exact_match
# A mistyped reward program stops the run at startup, before any rollout.
expect 2 "reward.command: 'no-such-scorer --x' exited with status 127 (command not found?) right after it started" -- train "$tiny" trainer.output_dir=runs-nocmd "${short[@]}" "${jsonl[@]}" data.skip_malformed=true sft.steps=0 reward.type=command 'reward.command=no-such-scorer --x'
# ...and the run that failed in setup does not block the corrected rerun (its metrics.jsonl is empty).
printf '{"prompt": "1+2=", "answer": "3"}\n{"prompt": "2+2=", "answer": "4"}\n' >noanswer.jsonl
expect 0 '' -- train "$tiny" trainer.output_dir=runs-noanswer "${short[@]}" data.synthetic_task= data.train_files=[noanswer.jsonl] reward.type=exact_match
# export --fp8: HF's FP8 format, which generate recognises as an FP8 checkpoint by itself.
expect 0 'FP8 projections in HF' -- export runs/quickstart-tiny -o exported-fp8 --fp8
grep -q '"quant_method": "fp8"' exported-fp8/config.json && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: no quantization_config in the FP8 export"; }
printf '{"prompt": "12+34="}\n' >one.jsonl
expect 0 'FP8' -- generate --model exported-fp8 --prompts one.jsonl --max-new-tokens 4 --device cpu --dtype float32 -o one.out.jsonl
# eval: a checkpoint scored by the dense evaluator; bad sources and paths are exit 2.
expect 0 '"val/accuracy"'        -- eval runs-val/quickstart-tiny trainer.device=cpu
expect 2 'neither a checkpoint'  -- eval plain-file-dir
expect 2 'does not exist'        -- eval runs-val/quickstart-tiny -o no-such-dir/e.json
expect 2 'no data.val_files'     -- eval runs/quickstart-tiny trainer.device=cpu
# Ctrl-C: the first stops after the current step, saves a checkpoint and exits 130. `timeout`
# passes the INT on, and ends the run after 10 minutes should this script be killed before it.
# timeout passes the INT on twice, to the process and to its process group, and the copy could
# land after the first was handled; so a second INT, sent to the process as soon as the first
# shows, must be taken as the same Ctrl-C (within a second of it), not as "quit now".
timeout 600 "$bin" train "$tiny" trainer.output_dir=runs-int "${short[@]}" trainer.total_training_steps=100000 checkpoint.save_freq=0 >int.out 2>int.err &
pid=$!
bg=$pid
for _ in $(seq 1 600); do [ -s runs-int/quickstart-tiny/metrics.jsonl ] && break; sleep 0.1; done
child=
for p in /proc/[0-9]*; do  # the process timeout runs: the one whose parent pid (stat's 4th field) is $pid
  read -r stat <"$p/stat" 2>/dev/null || continue
  fields=(${stat##*) })
  [ "${fields[1]}" = "$pid" ] && child=${p#/proc/}
done
kill -INT $pid
for _ in $(seq 1 200); do grep -q 'interrupted' int.err && break; sleep 0.01; done
[ -n "$child" ] && kill -INT "$child" 2>/dev/null
wait $pid
got=$?
bg=
if [ $got -eq 130 ] && grep -q 'stopped by a signal' int.err && ls runs-int/quickstart-tiny/checkpoints/step_* >/dev/null 2>&1; then
  passes=$((passes + 1))
else
  fails=$((fails + 1)); echo "FAIL: Ctrl-C: exit $got, want 130 with a checkpoint"; tail -3 int.err
fi

expect 0 'TFLOP/s'               -- bench gemm --help
expect 2 ''                      -- bench
expect 2 'reps'                  -- bench gemm --reps 1
expect 2 'excludes'              -- bench rollout --preset 8b --model .
expect 2 'no-such-dir'           -- bench rollout --model no-such-dir
expect 2 'weight-scaling: foo'   -- bench rollout --weight-scaling foo
if ! command -v nvidia-smi >/dev/null 2>&1; then
  expect 1 'needs a CUDA build'  -- bench gemm --models tiny --m 1
fi

# init writes a checkpoint that check accepts as model.path.
expect 0 'wrote a random qwen3'  -- init --preset tiny --out ckpt --seed 3
[ -f ckpt/config.json ] && [ -f ckpt/model.safetensors ] && [ -f ckpt/tokenizer.json ] && [ -f ckpt/tokenizer_config.json ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: init wrote no checkpoint"; }
expect 0 'model qwen3, 4 layers' -- check "$tiny" model.init_preset= model.path=ckpt
# init --fp8 writes HF's FP8 format: check (quant_method: fp8, the tiny recipe's) takes its
# projections as stored; quant_method: none refuses it by name.
expect 0 'wrote a random qwen3 FP8 checkpoint' -- init --preset tiny --fp8 --out ckpt-fp8 --seed 3
grep -q '"quantization_config"' ckpt-fp8/config.json && [ -f ckpt-fp8/tokenizer.json ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: init --fp8 wrote no quantization_config or tokenizer"; }
expect 0 'is pre-quantized: 28 FP8 tensors' -- check "$tiny" model.init_preset= model.path=ckpt-fp8
expect 2 'needs quantization.quant_method: fp8' -- check "$tiny" model.init_preset= model.path=ckpt-fp8 quantization.quant_method=none
expect 2 "unknown --preset 'huge'" -- init --preset huge --out x
# check reads the checkpoint's headers: a missing tensor is named with its file.
mkdir -p broken-ckpt && cp ckpt/config.json ckpt/tokenizer.json broken-ckpt/
python3 - <<'PY'
import json, struct
# A safetensors file holding only the embedding: every other tensor is missing.
header = {"model.embed_tokens.weight": {"dtype": "BF16", "shape": [512, 64], "data_offsets": [0, 512 * 64 * 2]}}
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open("broken-ckpt/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + bytes(512 * 64 * 2))
PY
expect 2 "model.safetensors" -- check "$tiny" model.init_preset= model.path=broken-ckpt
expect 2 'arch'                  -- init --arch gpt2 --out x

# Every shipped recipe parses; the real-model ones stop only at their (absent) local model
# (the quickstart and the experiment's recipes make their model: model.init_preset).
for r in "$root"/recipes/*.yaml; do
  case $r in
    *quickstart* | *addition-76m*) expect 0 'is valid' -- check "$r" ;;
    *) expect 2 "model.path: no such file or directory" -- check "$r" ;;
  esac
done


# Issue 13: bad input as an adversary writes it.
# expect_alone <code> <needle> -- args...: as expect, and stderr is exactly that one line.
expect_alone() {
  expect "$@"
  if [ "$(wc -l <"$tmp/err")" -ne 1 ]; then
    fails=$((fails + 1))
    echo "FAIL: stderr of fp8rl ${*:4} is $(wc -l <"$tmp/err") lines, want 1"
  fi
}
printf '  base: %s\nrollout:\n  n: 3\n' "$tiny" >indented.yaml
expect_alone 2 'indented.yaml:2: a second YAML document' -- check indented.yaml
printf 'base: %s\n---\nrollout:\n  n: 3\n' "$tiny" >two-docs.yaml
expect_alone 2 'two-docs.yaml:2: a second YAML document' -- check two-docs.yaml
printf 'base: %s\nrollout:\n  n: 3\n  n: 4\n' "$tiny" >dup.yaml
expect_alone 2 "dup.yaml:4: duplicate key 'n' (first set at line 3)" -- check dup.yaml
printf 'base: %s\n[a, b]: 1\n' "$tiny" >list-key.yaml
expect_alone 2 'list-key.yaml:2: a key must be a plain name' -- check list-key.yaml
expect_alone 2 'exceeds the model' -- check "$tiny" quantization.num_first_layers_in_bf16=9223372036854775807
expect_alone 2 'model.tokenizer_path' -- check "$tiny" model.tokenizer_path=/no/such/dir
echo x >plain-file
expect_alone 2 'is not a directory (a checkpoint directory)' -- train "$tiny" trainer.output_dir=runs2 --resume plain-file
expect_alone 2 'reward.pattern' -- check "$tiny" data.synthetic_task= reward.type=regex data.train_files=plain-file "reward.pattern=$(printf '%.0s(' $(seq 1 30000))"
# A failed write of the resolved recipe fails the command.
if [ -w /dev/full ]; then
  "$bin" check "$tiny" >/dev/full 2>"$tmp/err"
  got=$?
  if [ $got -eq 1 ] && grep -q '^fp8rl: error: cannot write to standard output' "$tmp/err"; then passes=$((passes + 1)); else fails=$((fails + 1)); echo "FAIL: check > /dev/full -> exit $got"; fi
  "$bin" check --keys >/dev/full 2>/dev/null && { fails=$((fails + 1)); echo "FAIL: check --keys > /dev/full -> exit 0"; } || passes=$((passes + 1))
fi
# Control characters in a key or a value are escaped: one line.
expect_alone 2 "unknown key 'rollout.n\\nx'" -- check "$tiny" "$(printf 'rollout.n\nx=3')"
expect_alone 2 'expected an integer' -- check "$tiny" "$(printf 'rollout.n=[1,\n2]')"
# Bad paths are exit 2.
expect_alone 2 'trainer.output_dir' -- train "$tiny" trainer.output_dir=plain-file
expect_alone 2 'neither a checkpoint' -- export plain-file -o exported-x
expect_alone 2 "unknown task 'nosuch'" -- data nosuch -o x.jsonl
expect_alone 2 'sft.steps: 0 steps' -- sft "$tiny" trainer.output_dir=runs-sft0 sft.steps=0
mkdir -p ro && chmod 555 ro
if [ "$(id -u)" -ne 0 ]; then
  expect_alone 2 'trainer.output_dir' -- train "$tiny" trainer.output_dir=ro/runs
fi
expect_alone 2 "exists and is not a directory" -- init --preset tiny --out plain-file
expect_alone 2 "already holds a model" -- init --preset tiny --out ckpt
expect_alone 2 "init: cannot create --out 'plain-file/x'" -- init --preset tiny --out plain-file/x
expect 2 '' -- init --preset tiny --out ckpt-neg --seed -1
[ ! -e ckpt-neg ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: init --seed -1 wrote a checkpoint"; }
expect_alone 2 "--device: tpu not in {cpu,cuda}" -- init --preset tiny --out ckpt-tpu --device tpu
if ! command -v nvidia-smi >/dev/null 2>&1; then  # a CPU-only build or no GPU: --device cuda is the user's to fix
  expect_alone 2 "init: --device cuda, but this build of fp8rl has no CUDA or no GPU is visible" -- init --preset tiny --fp8 --device cuda --out ckpt-cuda
  expect_alone 2 "init: --device cuda, but this build of fp8rl has no CUDA or no GPU is visible" -- init --preset tiny --device cuda --out ckpt-cuda
  [ ! -e ckpt-cuda ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: init --device cuda without CUDA created --out"; }
fi
expect_alone 2 "command line 'quantization.modules_in_bf16=[x]': quantization.modules_in_bf16: pattern 'x'" -- check "$tiny" 'quantization.modules_in_bf16=[x]'
expect_alone 2 "command line 'quantization.modules_in_bf16=[x]': quantization.modules_in_bf16: pattern 'x'" -- train "$tiny" trainer.output_dir=runs3 'quantization.modules_in_bf16=[x]'
expect 0 'in FP32 (' -- check "$tiny" model.dtype=float32
expect 0 'gpu_memory_utilization: 0.6 ' -- check "$tiny" rollout.gpu_memory_utilization=0.6
# Extra arguments are not silently ignored.
expect_alone 2 '--version takes no other arguments' -- --version extra
expect_alone 2 'check --keys takes no recipe' -- check --keys "$tiny"
# config.json: a huge layer count is refused at once; a number beyond double is a config error.
mkdir -p huge && cp ckpt/tokenizer.json huge/ && sed 's/"num_hidden_layers": *[0-9]*/"num_hidden_layers": 1000000000/' ckpt/config.json >huge/config.json
expect_alone 2 'num_hidden_layers must be <= 1024' -- check "$tiny" model.init_preset= model.path=huge
mkdir -p bignum && cp ckpt/tokenizer.json bignum/ && sed "s/\"num_hidden_layers\": *[0-9]*/\"num_hidden_layers\": 1$(printf '%.0s0' $(seq 1 400))/" ckpt/config.json >bignum/config.json
expect_alone 2 'not valid JSON' -- check "$tiny" model.init_preset= model.path=bignum

# Seeds are checked as text (CLI11 would wrap -1 or clamp 2^64 into a uint64 without a word).
expect_alone 2 'expected an integer from 0 to 9223372036854775807' -- data addition -o seeds.jsonl --seed -1
expect_alone 2 'expected an integer from 0 to 9223372036854775807' -- init --preset tiny --out ckpt-big --seed 99999999999999999999
[ ! -e seeds.jsonl ] && [ ! -e ckpt-big ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: a bad seed wrote output"; }
# Output paths: a directory, a FIFO, a missing directory are the user's to fix (exit 2), and
# nothing is replaced; export never replaces a file with its directory.
mkfifo out.fifo && mkdir -p out.dir && echo keep >keep.txt
expect_alone 2 "data: -o 'out.fifo': exists and is not a regular file" -- data addition -o out.fifo --count 3
[ -p out.fifo ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: data -o FIFO replaced the FIFO"; }
expect_alone 2 "data: -o 'out.dir': is a directory" -- data addition -o out.dir --count 3
expect_alone 2 "does not exist" -- data addition -o no/such/dir/x.jsonl --count 3
expect_alone 2 "export: -o 'keep.txt' exists and is not a directory" -- export runs -o keep.txt
[ "$(cat keep.txt)" = keep ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: export -o FILE replaced the file"; }
# A bad FP8RL_* setting stops any command at startup (one line, exit 2), before it reads a recipe
# or loads a model, and writes nothing; a variable fp8rl does not read is left alone.
FP8RL_FUSED_KV_STORE=yes expect_alone 2 "FP8RL_FUSED_KV_STORE: expected 0 or 1, got 'yes'" -- data addition -o env.jsonl --count 3
[ ! -e env.jsonl ] && passes=$((passes + 1)) || { fails=$((fails + 1)); echo "FAIL: a bad FP8RL_ setting wrote output"; }
FP8RL_NOT_A_SETTING=yes expect 0 '' -- data addition -o env.jsonl --count 3

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
