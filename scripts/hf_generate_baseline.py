"""Peer baseline for `fp8rl bench rollout` (issue 11): HF transformers' generate() on a random
Qwen3 model of a preset shape, RL-shaped work as in the bench (prompts of 512 tokens, 256 new
tokens each, temperature 1, full distribution: top-k and top-p off; min_new_tokens so no sample
stops early). Prints generated tokens/s per batch size. Runs on the GPU machine (transformers
there); random weights made here, nothing downloaded.

    python3 scripts/hf_generate_baseline.py --preset 0.6b --batch 1,64
"""
import argparse
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

PRESETS = {  # hidden, intermediate, layers, heads, kv heads, head_dim (core/recipe/model_presets.cpp)
    "0.6b": (1024, 3072, 28, 16, 8, 128),
    "8b": (4096, 12288, 36, 32, 8, 128),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="0.6b", choices=sorted(PRESETS))
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=256)
    a = ap.parse_args()
    h, i, l, nh, kv, d = PRESETS[a.preset]
    cfg = Qwen3Config(hidden_size=h, intermediate_size=i, num_hidden_layers=l, num_attention_heads=nh,
                      num_key_value_heads=kv, head_dim=d, vocab_size=151936, tie_word_embeddings=True,
                      max_position_embeddings=a.prompt_len + a.gen_len + 16)
    torch.manual_seed(0)
    with torch.device("cuda"):  # initialised on the GPU (an 8B model in fp32 is slow to make on the CPU)
        model = Qwen3ForCausalLM(cfg).to(dtype=torch.bfloat16).eval()
    gen = dict(max_new_tokens=a.gen_len, min_new_tokens=a.gen_len, do_sample=True, temperature=1.0, top_k=0,
               top_p=1.0, pad_token_id=0)
    print(f"HF transformers generate(), random Qwen3-{a.preset} shape, bf16, {torch.cuda.get_device_name()}, "
          f"prompts {a.prompt_len} tokens, {a.gen_len} new tokens")
    for b in [int(x) for x in a.batch.split(",")]:
        ids = torch.randint(0, cfg.vocab_size, (b, a.prompt_len), device="cuda")
        with torch.no_grad():
            model.generate(ids[:, :16], max_new_tokens=8, min_new_tokens=8, do_sample=True, top_k=0, pad_token_id=0)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model.generate(ids, **gen)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        n = (out.shape[1] - a.prompt_len) * b
        print(f"batch {b}: {n / dt:.0f} generated tokens/s ({1000 * dt / a.gen_len:.1f} ms per step, {dt:.1f} s)")


if __name__ == "__main__":
    main()
