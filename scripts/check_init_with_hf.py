#!/usr/bin/env python3
"""Checks that a checkpoint written by `fp8rl init` loads in HF transformers: config, weights
(no missing/unexpected keys), tokenizer (ids equal to a byte-per-id encoding with the special
token whole) and chat template. Run on the GPU machine (it has transformers):
    build-gpu/apps/fp8rl init --preset tiny --out /tmp/ckpt && python3 scripts/check_init_with_hf.py /tmp/ckpt
"""
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
assert not info["missing_keys"] and not info["unexpected_keys"], info
tok = AutoTokenizer.from_pretrained(path)
text = "héllo <|im_end|> 你好\n"
ids = tok.encode(text, add_special_tokens=False)
assert len(ids) == len(text.encode()) - len("<|im_end|>") + 1, ids
assert tok.decode(ids) == text
chat = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
assert chat == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", repr(chat)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits
print(f"HF loads {path}: {sum(p.numel() for p in model.parameters())} params, ids {ids[:8]}..., logits {tuple(logits.shape)}")
