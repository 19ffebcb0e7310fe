#!/usr/bin/env python3
"""Checks `fp8rl export` against things fp8rl did not write: HF transformers loads the exported
model and gives the log-probs fp8rl's engine reported for the same tokens, and (if peft is
installed) PEFT loads the exported adapters onto the run's starting model and gives the same
logits as the merged export.

  python3 scripts/check_export_with_hf.py --export DIR --generated G.jsonl --prompts P.jsonl \
      [--base STARTING_MODEL_DIR]

G.jsonl: `fp8rl generate --model DIR --quantization none --dtype float32 --temperature 0` on
P.jsonl (prompts as raw text). Exit 0 when every check holds; prints the largest differences.
"""
import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def logprobs(model, ids, new):
    with torch.no_grad():
        logits = model(torch.tensor([ids + new])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    return [lp[len(ids) + j - 1, t].item() for j, t in enumerate(new)], logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--generated", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--base")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.export)
    model = AutoModelForCausalLM.from_pretrained(args.export, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    prompts = [json.loads(l)["prompt"] for l in open(args.prompts)]
    rows = [json.loads(l) for l in open(args.generated)]
    worst, ok = 0.0, True
    all_logits = []
    for r in rows:
        ids = tok(prompts[r["prompt_index"]], add_special_tokens=False)["input_ids"]
        ours = r["logprobs"]
        theirs, logits = logprobs(model, ids, r["token_ids"])
        all_logits.append((ids, r["token_ids"], logits))
        d = max(abs(a - b) for a, b in zip(ours, theirs)) if ours else 0.0
        worst = max(worst, d)
        greedy = all(int(logits[len(ids) + j - 1].argmax()) == t for j, t in enumerate(r["token_ids"]))
        ok = ok and d < 1e-3 and greedy
    print(f"transformers vs fp8rl engine on the export: max |logprob diff| {worst:.2e} over {len(rows)} samples, "
          f"greedy tokens {'equal' if ok else 'DIFFER'}")
    if args.base and os.path.exists(os.path.join(args.export, "adapter", "adapter_config.json")):
        try:
            from peft import PeftModel
        except ImportError:
            print("peft is not installed: adapter check skipped")
        else:
            base = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32,
                                                        attn_implementation="eager")
            peft_model = PeftModel.from_pretrained(base, os.path.join(args.export, "adapter")).eval()
            dmax = 0.0
            for ids, new, logits in all_logits:
                with torch.no_grad():
                    pl = peft_model(torch.tensor([ids + new])).logits[0].float()
                dmax = max(dmax, (pl - logits).abs().max().item())
            print(f"PEFT (base + exported adapters) vs merged export: max |logit diff| {dmax:.2e}")
            ok = ok and dmax < 1e-3
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
