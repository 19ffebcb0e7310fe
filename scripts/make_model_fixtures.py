#!/usr/bin/env python3
"""Parity fixtures for fp8rl's model forward (core/model/): tiny random HF models and HF's logits.

Writes (small, committed; CI never runs this script):
  <out-dir>/<family>/config.json            save_pretrained's config
  <out-dir>/<family>/model.safetensors      the weights, stored as BF16 (see below)
  <out-dir>/<family>/logits.safetensors     input_ids [2, 11] int64, logits [2, 11, 512] float32
for family in qwen3 (tied embeddings), qwen2 (q/k/v bias, untied), llama (rope_type llama3,
untied). Shapes are deliberately odd: hidden 96, 3 layers, 6 query / 2 KV heads, head_dim 16,
intermediate 160, vocab 512, max_position_embeddings 256.

Weights are drawn in float32, then rounded to BF16-representable values *before* the reference
forward runs, and saved as BF16. The reference logits are HF's float32 forward (eager attention,
CPU) on exactly those weights, so fp8rl loading the BF16 file into float32 computes with the
same numbers -- and each family dir stays under 1 MB (float32 would be ~1.2 MB).
RMSNorm weights and biases are perturbed away from HF's init (ones / zeros) so that a forward
that forgot to apply them would not pass.

Usage: pip install torch transformers   (written for transformers 5.x; 4.4x also works)
       python3 scripts/make_model_fixtures.py --out-dir tests/data/models
       python3 scripts/make_model_fixtures.py --real-shape --out /tmp/qwen3_0.6b_parity
The --real-shape mode builds a random Qwen3-0.6B-shaped model in BF16 on CUDA, runs 1x64 random
ids and writes the model (save_pretrained) plus logits.safetensors (ids, logits as float32) into
--out: a one-off GPU parity check, not committed.
"""
import argparse
import inspect
import json
import os

import torch
from safetensors.torch import save_file
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

SEED = 1234
BATCH, SEQ = 2, 11

COMMON = dict(
    vocab_size=512,
    hidden_size=96,
    intermediate_size=160,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=256,
    # Larger than HF's 0.02 so that logits are O(1) and a 1e-4 tolerance means something.
    initializer_range=0.1,
)

FAMILIES = {
    "qwen3": dict(config_cls=Qwen3Config, model_cls=Qwen3ForCausalLM,
                  kwargs=dict(head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True,
                              attention_bias=False),
                  rope=dict(rope_type="default", rope_theta=1000000.0)),
    "qwen2": dict(config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM,
                  kwargs=dict(rms_norm_eps=1e-6, tie_word_embeddings=False,
                              use_sliding_window=False),
                  rope=dict(rope_type="default", rope_theta=10000.0)),
    "llama": dict(config_cls=LlamaConfig, model_cls=LlamaForCausalLM,
                  kwargs=dict(head_dim=16, rms_norm_eps=1e-5, tie_word_embeddings=False,
                              attention_bias=False, mlp_bias=False),
                  rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                            low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position_embeddings=64)),
}


def accepts(fn, name):
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def make_config(config_cls, kwargs, rope, base=COMMON):
    kwargs = {**base, **kwargs}
    # transformers 5 takes RoPE settings as `rope_parameters` (theta included); 4.x as
    # `rope_theta` + `rope_scaling`. config.json records whichever the installed version uses,
    # and fp8rl's parser reads both spellings.
    if accepts(config_cls.__init__, "rope_parameters"):
        kwargs["rope_parameters"] = dict(rope)
    else:
        kwargs["rope_theta"] = rope["rope_theta"]
        if rope["rope_type"] != "default":
            kwargs["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    cfg = config_cls(**kwargs)
    cfg._attn_implementation = "eager"
    return cfg


def build_model(model_cls, cfg, dtype, device):
    torch.manual_seed(SEED)
    model = model_cls(cfg)
    model.to(device=device, dtype=dtype)
    model.eval()
    return model


@torch.no_grad()
def perturb_and_round(model):
    """Norm weights away from 1, biases away from 0; every parameter BF16-representable."""
    g = torch.Generator().manual_seed(SEED + 1)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1.0 + noise.to(p.device, p.dtype))
        elif name.endswith(".bias"):
            p.copy_((torch.randn(p.shape, generator=g) * 0.1).to(p.device, p.dtype))
        p.copy_(p.to(torch.bfloat16).to(p.dtype))


def fixed_ids(batch, seq, vocab, device="cpu"):
    g = torch.Generator().manual_seed(SEED + 2)
    return torch.randint(0, vocab, (batch, seq), generator=g, dtype=torch.int64).to(device)


def save_model(model, out):
    if accepts(model.save_pretrained, "safe_serialization"):
        model.save_pretrained(out, safe_serialization=True)
    else:  # transformers 5 always writes safetensors
        model.save_pretrained(out)


@torch.no_grad()
def make_family(name, spec, out_dir):
    torch.set_default_dtype(torch.float32)
    cfg = make_config(spec["config_cls"], spec["kwargs"], spec["rope"])
    model = build_model(spec["model_cls"], cfg, torch.float32, "cpu")
    perturb_and_round(model)
    ids = fixed_ids(BATCH, SEQ, cfg.vocab_size)
    logits = model(input_ids=ids).logits.float().contiguous()
    assert logits.shape == (BATCH, SEQ, cfg.vocab_size), logits.shape

    out = os.path.join(out_dir, name)
    os.makedirs(out, exist_ok=True)
    model.to(torch.bfloat16)  # lossless: every weight was rounded to BF16 above
    save_model(model, out)
    save_file({"input_ids": ids.contiguous(), "logits": logits},
              os.path.join(out, "logits.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: {out} ({size / 1024:.0f} KiB), logits absmax {logits.abs().max():.3f}")
    if size >= 1 << 20:
        print(f"WARNING: {out} is {size} bytes, over the 1 MB budget")


@torch.no_grad()
def make_real_shape(out):
    """Random Qwen3-0.6B-shaped model (config.json of Qwen/Qwen3-0.6B), BF16 on CUDA."""
    cfg = make_config(Qwen3Config, dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True,
        attention_bias=False, initializer_range=0.02),
        dict(rope_type="default", rope_theta=1000000.0), base={})
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16).eval()
    perturb_and_round(model)
    ids = fixed_ids(1, 64, cfg.vocab_size, "cuda")
    logits = model(input_ids=ids).logits.float().cpu().contiguous()
    os.makedirs(out, exist_ok=True)
    save_model(model, out)
    save_file({"input_ids": ids.cpu().contiguous(), "logits": logits},
              os.path.join(out, "logits.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    print(f"real-shape: {out}, logits absmax {logits.abs().max():.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="tests/data/models")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--real-shape", action="store_true")
    ap.add_argument("--out", help="output dir for --real-shape")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if args.real_shape:
        if not args.out:
            ap.error("--real-shape needs --out")
        make_real_shape(args.out)
        return
    for name in args.families.split(","):
        make_family(name, FAMILIES[name], args.out_dir)


if __name__ == "__main__":
    main()
