#!/usr/bin/env python3
"""Greedy-generation fixtures for fp8rl's engine: HF transformers' own greedy tokens on the
committed fixture models (tests/data/models/<family>, made by make_model_fixtures.py).

Writes <out-dir>/<family>/greedy.safetensors with
  prompt_<i>  [len_i] int64   prompt ids (fixed, awkward lengths: 1, 5, 17, 40)
  tokens_<i>  [16] int64      model.generate(do_sample=False, max_new_tokens=16) continuation
HF's float32 eager forward on the CPU, no EOS (every continuation runs 16 tokens). fp8rl's engine
(fp32, CPU) must produce the same tokens (tests/rollout/test_engine.cpp).

Usage (where torch + transformers are installed, e.g. the GPU machine):
  python3 scripts/make_greedy_fixtures.py --models tests/data/models --out-dir OUT
"""
import argparse
import os

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

PROMPT_LENS = [1, 5, 17, 40]
NEW_TOKENS = 16


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tests/data/models")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    for family in ["qwen3", "qwen2", "llama"]:
        model = AutoModelForCausalLM.from_pretrained(os.path.join(args.models, family), torch_dtype=torch.float32,
                                                     attn_implementation="eager").eval()
        vocab = model.config.vocab_size
        gen = torch.Generator().manual_seed(4321)
        out = {}
        for i, n in enumerate(PROMPT_LENS):
            prompt = torch.randint(0, vocab, (1, n), generator=gen)
            with torch.no_grad():
                full = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                      max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, eos_token_id=None,
                                      pad_token_id=0)
            out[f"prompt_{i}"] = prompt[0].contiguous()
            out[f"tokens_{i}"] = full[0, n:].contiguous()
        os.makedirs(os.path.join(args.out_dir, family), exist_ok=True)
        save_file(out, os.path.join(args.out_dir, family, "greedy.safetensors"))
        print(family, {k: v.tolist() for k, v in out.items() if k.startswith("tokens_0")})


if __name__ == "__main__":
    main()
