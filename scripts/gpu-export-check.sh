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

# The FP8 export (HF's FP8 format) through transformers' own FP8 loader on the GPU: its greedy
# tokens and log-probs against fp8rl's engine on the same FP8 checkpoint (loaded as stored).
"$bin" export runs/run -o exported-fp8 --fp8 || exit 1
"$bin" generate --model exported-fp8 --dtype bfloat16 --device cuda --temperature 0 --max-new-tokens 6 \
  --prompts prompts.jsonl -o generated-fp8.jsonl 2>gen-fp8.log || { tail -3 gen-fp8.log; exit 1; }
python3 - exported-fp8 generated-fp8.jsonl prompts.jsonl <<'PY'
# Seen on 2026-12-04 (transformers 5.17): the export loads (FP8 projections become transformers'
# FP8Linear), but its FP8 forward needs the `kernels` package (0.16.x, kernels fetched from the
# HF hub), which the offline GPU machine lacks. Then the same checkpoint is loaded again with
# FineGrainedFP8Config(dequantize=True): transformers itself turns E4M3 + weight_scale_inv into
# bf16 weights, which checks that it reads our format (block orientation, scales) as we wrote it.
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, gen, prompts = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(model_dir)
texts = [json.loads(l)["prompt"] for l in open(prompts)]
rows = [json.loads(l) for l in open(gen)]

def compare(m, label):
    worst, agree, total = 0.0, 0, 0
    for row in rows:
        prompt = tok(texts[row["prompt_index"]], add_special_tokens=False)["input_ids"]
        out = row["token_ids"]
        ids = torch.tensor([prompt + out], device="cuda")
        with torch.no_grad():
            logp = torch.log_softmax(m(ids).logits[0].float(), -1)  # [T, V]
        for j, t in enumerate(out):
            pos = len(prompt) - 1 + j
            worst = max(worst, abs(logp[pos, t].item() - row["logprobs"][j]))
            agree += int(logp[pos].argmax().item() == t)
            total += 1
    print(f"FP8 export, {label}: transformers vs fp8rl log-probs max |diff| {worst:.3e}; greedy tokens agree {agree}/{total}")

m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda").eval()
print("transformers loads layer 1 q_proj as", type(m.model.layers[1].self_attn.q_proj).__name__)
try:
    compare(m, "transformers' FP8 kernels")
except ImportError as e:
    print(f"transformers' FP8 forward unavailable here: {str(e).splitlines()[0]}")
from transformers import FineGrainedFP8Config
m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda",
                                         quantization_config=FineGrainedFP8Config(dequantize=True)).eval()
print("with dequantize=True, layer 1 q_proj is", type(m.model.layers[1].self_attn.q_proj).__name__)
compare(m, "dequantized by transformers to bf16")
PY
