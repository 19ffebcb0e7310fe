#!/usr/bin/env bash
# Data parallelism: `fp8rl train --gpus 2` runs two ranks that must train like one process with
# the same global batch. On CPU (gloo, CI) as below; with device cuda (NCCL, the gpu-labelled
# test) the same on a machine with 2+ GPUs, and on one GPU the ranks' code path at world size 1
# instead: a rank started with torchrun's variables (WORLD_SIZE=1) joins an NCCL group of one and
# must train exactly like the plain process, and `--gpus 2` is refused with one line.
#   1. the tiny quickstart, 4 RL steps, one process;
#   2. the same recipe as 2 ranks, stopped after 2 steps and resumed (--resume auto) to 4: the
#      samples of every step are the same (rewards, lengths, token counts equal exactly), and the
#      loss, gradient norm, entropy and the old log-probs' perplexity (gathered from both ranks)
#      agree within 1e-4 relative (float sums in another order);
#   3. a bad prompt file found by rank 0 during setup: its one line, exit 2, the other rank quiet;
#   4. a rank killed mid-run takes the other down: one line naming it, the launcher's exit status
#      is the rank's (137), within seconds, not a hang.
# Usage: test_data_parallel.sh <fp8rl binary> <project root> [cpu|cuda]
set -euo pipefail
bin=$(realpath "$1")
root=$(realpath "$2")
device=${3:-cpu}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
recipe="$root/recipes/quickstart-tiny.yaml"
common=(trainer.device="$device" checkpoint.save_freq=1 logging.logger=[jsonl] sft.steps=120)
ranks=2 backend=gloo
if [ "$device" = cuda ]; then
  backend=NCCL
  [ "$(nvidia-smi -L | wc -l)" -ge 2 ] || ranks=1
fi
# The second run's ranks: `--gpus 2`, or one rank under a launcher's environment.
two_ranks() {
  if [ "$ranks" -eq 2 ]; then
    "$bin" train "$@" --gpus 2
  else
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$bin" train "$@"
  fi
}

"$bin" train "$recipe" trainer.output_dir=one trainer.total_training_steps=4 "${common[@]}" >one.txt 2>&1 \
  || { tail -20 one.txt; exit 1; }
two_ranks "$recipe" trainer.output_dir=two trainer.total_training_steps=2 "${common[@]}" >two.txt 2>&1 \
  || { tail -20 two.txt; exit 1; }
two_ranks "$recipe" trainer.output_dir=two trainer.total_training_steps=4 "${common[@]}" --resume auto \
  >>two.txt 2>&1 || { tail -20 two.txt; exit 1; }
grep -q "rank $((ranks - 1)) of $ranks joined the process group ($backend" two.txt \
  || { echo "FAIL: no rank $((ranks - 1)) of $ranks joined a $backend group"; tail -20 two.txt; exit 1; }
grep -q "resumed from .*step_00000002 at step 2" two.txt || { echo "FAIL: the 2-rank run did not resume"; tail -20 two.txt; exit 1; }

python3 - one/quickstart-tiny/metrics.jsonl two/quickstart-tiny/metrics.jsonl <<'PY'
import json, sys
one = {r["step"]: r for r in map(json.loads, open(sys.argv[1]))}
two = {r["step"]: r for r in map(json.loads, open(sys.argv[2]))}
exact = ["reward/mean", "score/accuracy", "response_length/mean", "response_length/max",
         "rollout/generated_tokens", "rollout/kept_groups"]
close = ["actor/pg_loss", "actor/grad_norm", "actor/entropy", "actor/pg_clipfrac_high", "rollout_corr/training_ppl"]
bad = []
if sorted(one) != [1, 2, 3, 4] or sorted(two) != [1, 2, 3, 4]:
    bad.append(f"steps: one {sorted(one)}, two {sorted(two)}")
for s in sorted(set(one) & set(two)):
    a, b = one[s], two[s]
    for k in exact:
        if a.get(k) != b.get(k):
            bad.append(f"step {s} {k}: 1 rank {a.get(k)}, 2 ranks {b.get(k)}")
    for k in close:
        if k not in a or k not in b:
            bad.append(f"step {s} {k} missing")
        elif abs(a[k] - b[k]) > 1e-4 * max(abs(a[k]), abs(b[k])) + 1e-7:
            bad.append(f"step {s} {k}: 1 rank {a[k]!r}, 2 ranks {b[k]!r}")
    print(f"step {s}: reward {a['reward/mean']:.4f} | grad_norm {a['actor/grad_norm']:.8f} vs {b['actor/grad_norm']:.8f}"
          f" | pg_loss {a['actor/pg_loss']:.8f} vs {b['actor/pg_loss']:.8f}")
if not any(one[s].get("actor/grad_norm", 0) > 0 for s in one):
    bad.append("no step had a gradient (no reward signal): the comparison would prove nothing")
for line in bad:
    print("FAIL:", line)
sys.exit(1 if bad else 0)
PY

if [ "$ranks" -eq 1 ]; then  # one GPU: two ranks are refused before anything starts
  set +e
  "$bin" train "$recipe" trainer.output_dir=refused "${common[@]}" --gpus 2 >refused.txt 2>&1
  code=$?
  set -e
  [ "$code" -eq 2 ] && grep -q "trainer.n_gpus_per_node 2 but 1 GPU(s) are visible" refused.txt \
    || { echo "FAIL: --gpus 2 on one GPU gave exit $code"; cat refused.txt; exit 1; }
  echo "--gpus 2 on one GPU: $(cat refused.txt)"
  exit 0
fi

# A bad input that rank 0 finds while setting up (a malformed prompt line): its one line, once,
# the other rank stops without an error of its own, and the run's exit code is rank 0's (2).
printf '%s\n' '{"prompt": "1+1=", "answer": "2"}' '{"prompt": 5}' >bad.jsonl
set +e
"$bin" train "$recipe" trainer.output_dir=bad "${common[@]}" sft.steps=0 data.synthetic_task= \
  'data.train_files=[bad.jsonl]' reward.type=exact_match --gpus 2 >bad.txt 2>&1
code=$?
set -e
[ "$code" -eq 2 ] || { echo "FAIL: a bad prompt file under 2 ranks gave exit $code, expected 2"; cat bad.txt; exit 1; }
[ "$(grep -c 'bad.jsonl:2: "prompt": expected a string' bad.txt)" -eq 1 ] && grep -q "^fp8rl: error: rank 0 exited with code 2$" bad.txt \
  && [ "$(grep -c '^fp8rl: error:' bad.txt)" -eq 2 ] || { echo "FAIL: messages of a setup error under 2 ranks"; cat bad.txt; exit 1; }

# A rank that dies (SIGKILL, as the OOM killer would) in the middle of training: the launcher
# names it, stops the other rank, and exits with its status, within seconds.
"$bin" train "$recipe" trainer.output_dir=dies trainer.total_training_steps=1000 "${common[@]}" sft.steps=0 \
  checkpoint.save_freq=0 --gpus 2 >dies.txt 2>&1 &
launcher=$!
for _ in $(seq 600); do
  [ -s dies/quickstart-tiny/metrics.jsonl ] && break
  sleep 0.1
done
[ -s dies/quickstart-tiny/metrics.jsonl ] || { echo "FAIL: the 2-rank run did not start training"; tail -20 dies.txt; exit 1; }
victim=$(pgrep -P "$launcher" | tail -1)
kill -9 "$victim"
start=$(date +%s)
set +e
wait "$launcher"
code=$?
set -e
took=$(( $(date +%s) - start ))
[ "$code" -eq 137 ] || { echo "FAIL: a killed rank gave exit $code, expected 137"; tail -20 dies.txt; exit 1; }
# The victim is the younger child, rank 1; rank 0 then loses its peer and ends with exit 3
# (PeerFailure), which the launcher does not blame.
grep -Eq "^fp8rl: error: rank 1 was killed by signal 9 \(Killed\)(; stopping the other 1 rank)?$" dies.txt \
  || { echo "FAIL: no line naming the killed rank"; tail -20 dies.txt; exit 1; }
[ "$took" -lt 30 ] || { echo "FAIL: the run took ${took}s to stop after a rank died"; exit 1; }
[ -z "$(pgrep -P "$launcher" || true)" ] || { echo "FAIL: a rank outlived the launcher"; exit 1; }
echo "a killed rank stopped the run in ${took}s: $(grep 'was killed' dies.txt)"
