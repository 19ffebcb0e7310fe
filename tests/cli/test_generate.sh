#!/usr/bin/env bash
# `fp8rl generate` as a user runs it, on a tiny random model (CPU): BF16 and FP8 output that parses
# as JSONL with one line per sample, greedy determinism, seeded sampling, --chat and messages,
# --recipe with flag overrides, and malformed prompts / missing checkpoints as one `file:line`
# error with exit 2. Usage: test_generate.sh <fp8rl binary> <project root>
set -u
bin=$(realpath "$1")
root=$(realpath "$2")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
fails=0
passes=0
ok() { passes=$((passes + 1)); }
bad() { fails=$((fails + 1)); echo "FAIL: $*"; }

# expect <code> <stderr substring or ''> -- args...   (stdout in $tmp/out, stderr in $tmp/err)
expect() {
  local want=$1 needle=$2
  shift 3
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  local good=1
  [ "$got" -eq "$want" ] || good=0
  if [ -n "$needle" ] && ! grep -qF -- "$needle" "$tmp/err"; then good=0; fi
  if [ "$want" -ne 0 ] && [ "$(grep -c '^fp8rl: error: ' "$tmp/err")" -ne 1 ]; then good=0; fi
  if [ "$want" -ne 0 ] && [ "$(wc -l <"$tmp/err")" -gt 12 ]; then good=0; fi  # no dumps
  if [ $good -eq 1 ]; then ok; else
    bad "fp8rl $* -> exit $got (want $want, '$needle')"
    sed 's/^/  stderr: /' "$tmp/err" | tail -5
  fi
}

# check_jsonl <file> <lines> <n>: every line has the fields, token_ids and logprobs align.
check_jsonl() {
  python3 - "$@" <<'PY' && ok || bad "check_jsonl $*"
import json, sys
path, want, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(l) for l in open(path, encoding="utf-8")]
assert len(rows) == want, (len(rows), want)
seen = set()
for r in rows:
    for k in ("prompt_index", "sample_index", "line", "prompt_tokens", "text", "token_ids", "logprobs", "finish_reason"):
        assert k in r, (k, r)
    assert r["finish_reason"] in ("stop", "length"), r
    assert len(r["token_ids"]) == len(r["logprobs"]) >= 1, r
    assert all(isinstance(x, float) and x <= 0 for x in r["logprobs"]), r
    assert 0 <= r["sample_index"] < n
    seen.add((r["prompt_index"], r["sample_index"]))
assert len(seen) == want
PY
}

expect 0 'wrote a random qwen3' -- init --preset tiny --out tiny --seed 1
cat >prompts.jsonl <<'J'
{"prompt": "What is 2 + 3?", "answer": "5"}

{"prompt": "Hello"}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]}
J

# BF16, greedy: one line per prompt, deterministic run to run.
expect 0 'tokens/s' -- generate --model tiny --prompts prompts.jsonl --temperature 0 --max-new-tokens 8 -o g1.jsonl
grep -qF 'stop tokens' "$tmp/err" && grep -qF 'tokenizer_config.json' "$tmp/err" && ok || bad "no stop-token source on stderr"
check_jsonl g1.jsonl 3 1
expect 0 '' -- generate --model tiny --prompts prompts.jsonl --temperature 0 --max-new-tokens 8 -o g2.jsonl
cmp -s g1.jsonl g2.jsonl && ok || bad "greedy output differs between two runs"
# Standard output gives the same lines.
expect 0 '' -- generate --model tiny --prompts prompts.jsonl --temperature 0 --max-new-tokens 8
cmp -s g1.jsonl "$tmp/out" && ok || bad "stdout differs from -o"

# Sampling: n samples per prompt; the same seed gives the same samples, another seed others.
expect 0 '' -- generate --model tiny --prompts prompts.jsonl --n 4 --temperature 1.0 --top-k 50 --top-p 0.9 --seed 7 --max-new-tokens 6 -o s1.jsonl
check_jsonl s1.jsonl 12 4
expect 0 '' -- generate --model tiny --prompts prompts.jsonl --n 4 --temperature 1.0 --top-k 50 --top-p 0.9 --seed 7 --max-new-tokens 6 -o s2.jsonl
cmp -s s1.jsonl s2.jsonl && ok || bad "seeded sampling differs between two runs"
expect 0 '' -- generate --model tiny --prompts prompts.jsonl --n 4 --seed 8 --max-new-tokens 6 -o s3.jsonl
cmp -s s1.jsonl s3.jsonl && bad "seeds 7 and 8 gave the same samples" || ok

# FP8 (emulated on the CPU) and float32; --chat renders the prompt strings as user turns.
expect 0 'FP8' -- generate --model tiny --quantization fp8 --prompts prompts.jsonl --temperature 0 --max-new-tokens 8 -o f1.jsonl
check_jsonl f1.jsonl 3 1
expect 0 '' -- generate --model tiny --quantization fp8 --dtype float32 --chat --prompts prompts.jsonl --n 2 --max-new-tokens 5 -o c1.jsonl
check_jsonl c1.jsonl 6 2
python3 - <<'PY' && ok || bad "prompt_tokens with --chat should exceed the raw prompt's"
import json
raw = {r["prompt_index"]: r["prompt_tokens"] for r in map(json.loads, open("g1.jsonl"))}
chat = {r["prompt_index"]: r["prompt_tokens"] for r in map(json.loads, open("c1.jsonl"))}
assert chat[0] > raw[0] and chat[1] > raw[1] and chat[2] == raw[2], (raw, chat)
PY

# --recipe: rollout.n and max_response_length from the recipe, flags override them.
cat >r.yaml <<Y
base: $root/recipes/quickstart-tiny.yaml
model:
  init_preset: ""
  path: tiny
rollout:
  n: 3
  max_response_length: 4
Y
head -3 prompts.jsonl >text.jsonl  # the quickstart's chat_template: raw renders one user message
expect 2 'prompts.jsonl:4: model.chat_template=raw' -- generate --recipe r.yaml --prompts prompts.jsonl -o r1.jsonl
expect 0 '' -- generate --recipe r.yaml --prompts text.jsonl -o r1.jsonl
check_jsonl r1.jsonl 6 3
expect 0 '' -- generate --recipe r.yaml --prompts text.jsonl --n 1 --temperature 0 -o r2.jsonl
check_jsonl r2.jsonl 2 1
python3 -c "import json,sys; sys.exit(0 if all(len(json.loads(l)['token_ids']) <= 4 for l in open('r2.jsonl')) else 1)" && ok || bad "recipe max_response_length not applied"
printf 'base: r.yaml\nrollout:\n  temperature: -1\n' >r2.yaml
expect 2 'r2.yaml:3: rollout.temperature' -- generate --recipe r2.yaml --prompts text.jsonl -o x.jsonl
expect 0 '' -- generate --recipe r2.yaml --prompts text.jsonl --temperature 0 -o x.jsonl
# A temperature so small that 1 / T overflows float32 (the log-probs came out null).
expect 2 '--temperature: the temperature must be 0 (greedy) or >= 0.0001' -- generate --recipe r.yaml --prompts text.jsonl --temperature 1e-39 -o x.jsonl
expect 2 '--top-p' -- generate --recipe r.yaml --prompts text.jsonl --top-p 0 -o x.jsonl
# Stop strings: every printable ASCII character is one, so a random model's samples end at the
# first such byte (finish_reason stop) and their text holds none of them.
stops=()
for c in a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M N O P Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9 ' ' . , ';' : '!' '?' '<' '>' '|' '{' '}' '(' ')' '[' ']' '/' '=' '+' '-' '*' '&' '%' '$' '#' '@' '^' '_' '~' '`' '"' "'"; do
  stops+=(--stop "$c")
done
expect 0 '' -- generate --model tiny --prompts text.jsonl --n 4 --max-new-tokens 64 "${stops[@]}" -o st.jsonl
python3 - <<'PY' && ok || bad "stop strings: a sample kept a stop string or none stopped on one"
import json, string
rows = [json.loads(l) for l in open("st.jsonl")]
printable = set(string.ascii_letters + string.digits + " .,;:!?<>|{}()[]/=+-*&%$#@^_~`\"'")
assert all(not (set(r["text"]) & printable) for r in rows), [r["text"] for r in rows]
assert any(r["finish_reason"] == "stop" and len(r["token_ids"]) < 64 for r in rows)
PY
expect 2 '--stop: an empty stop string' -- generate --model tiny --prompts text.jsonl --stop '' -o x.jsonl
expect 2 'model.init_preset has no tokenizer' -- generate --recipe "$root/recipes/quickstart-tiny.yaml" --prompts prompts.jsonl

# Malformed prompts: file:line and what is expected, exit 2.
pl() { printf '{"prompt": "ok"}\n%s\n' "$1" >bad.jsonl; }
pl 'not json';                       expect 2 'bad.jsonl:2: not valid JSON' -- generate --model tiny --prompts bad.jsonl
pl '{"text": "x"}';                  expect 2 'bad.jsonl:2: no "prompt" or "messages" key' -- generate --model tiny --prompts bad.jsonl
pl '{"prompt": 5}';                  expect 2 'bad.jsonl:2: "prompt": expected a string or a list of messages, got a number' -- generate --model tiny --prompts bad.jsonl
pl '{"messages": [{"role": "user"}]}'; expect 2 'bad.jsonl:2: "messages"[0]: expected a string "content"' -- generate --model tiny --prompts bad.jsonl
pl '[]';                             expect 2 'bad.jsonl:2: got an array' -- generate --model tiny --prompts bad.jsonl
: >empty.jsonl;                      expect 2 'no prompts' -- generate --model tiny --prompts empty.jsonl
expect 2 'nope.jsonl' -- generate --model tiny --prompts nope.jsonl
# A prompt longer than the model's context is the user's to fix, before any weight loads.
python3 -c "import json; print(json.dumps({'prompt': 'ab ' * 14000}))" >long.jsonl
expect 2 'long.jsonl:1: the prompt is' -- generate --model tiny --prompts long.jsonl

# Missing or corrupt checkpoints: one line, exit 2; bad arguments: exit 2.
expect 2 "'missing' does not exist" -- generate --model missing --prompts prompts.jsonl
expect 2 '--model DIR or --recipe' -- generate --prompts prompts.jsonl
mkdir -p corrupt && cp tiny/config.json tiny/tokenizer.json tiny/tokenizer_config.json corrupt/
head -c 100 tiny/model.safetensors >corrupt/model.safetensors
expect 2 'model.safetensors' -- generate --model corrupt --prompts prompts.jsonl
mkdir -p notjson && cp -r tiny/. notjson/ && echo '{oops' >notjson/config.json
expect 2 'config.json' -- generate --model notjson --prompts prompts.jsonl
mkdir -p badgen && cp -r tiny/. badgen/ && echo '{"eos_token_id": "x"}' >badgen/generation_config.json
expect 2 'generation_config.json' -- generate --model badgen --prompts prompts.jsonl
expect 2 '' -- generate --model tiny --prompts prompts.jsonl --quantization int4
expect 2 '' -- generate --model tiny --prompts prompts.jsonl --n x
expect 2 '--n' -- generate --model tiny --prompts prompts.jsonl --n 0
expect 2 '--temperature' -- generate --model tiny --prompts prompts.jsonl --temperature -1
expect 2 'does not exist' -- generate --model tiny --prompts prompts.jsonl -o no/such/dir/out.jsonl

# generation_config.json's eos_token_id wins over tokenizer_config.json, and is named.
mkdir -p gen && cp -r tiny/. gen/ && echo '{"eos_token_id": [3, 4]}' >gen/generation_config.json
expect 0 'generation_config.json' -- generate --model gen --prompts prompts.jsonl --temperature 0 --max-new-tokens 4 -o gen.jsonl
check_jsonl gen.jsonl 3 1

echo "generate CLI: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
