#!/usr/bin/env python3
"""Parity fixtures for fp8rl's tokenizer (core/hf/tokenizer.h): small byte-level BPE tokenizers
trained with HF `tokenizers`, and HF's ids for a corpus of tricky strings.

Writes (all small, committed; CI never runs this script):
  tests/data/tokenizers/qwen2/tokenizer.json    Qwen2's split pattern, merges as ["a", "b"] pairs
  tests/data/tokenizers/llama3/tokenizer.json   Llama 3's split pattern, ignore_merges=true,
                                                merges as "a b" strings (the older format)
  tests/data/tokenizers/qwen2_nfc/tokenizer.json  qwen2 with normalizer NFC, as the real Qwen2/
                                                Qwen2.5/Qwen3 files have, plus one added token
                                                "<vi\u1ec7t>" with normalized=true
  tests/data/tokenizers/cases.json              {"cases": [{"text", "nfc", "qwen2", "llama3",
                                                "qwen2_nfc"}], ...}

All mirror the pre-tokenizer / decoder of the real models' tokenizer.json:
  Sequence[Split(Regex(pattern), "isolated"), ByteLevel(add_prefix_space=False, use_regex=False)]
qwen2 and llama3 have no normalizer; qwen2_nfc has NFC (HF: special tokens, normalized=false, are
matched on the raw text; the stretches between them are NFC-normalized; normalized=true added
tokens are then matched in the normalized text).
Ids are HF's `encode(text, add_special_tokens=False)`; fp8rl's encode never adds BOS/EOS.
"nfc" is what HF's qwen2_nfc decode(encode(text)) gives back: the NFC form of the text (checked
here to equal normalizer.normalize_str(text)).

Usage: pip install tokenizers  (0.20+; fixtures were made with 0.23.3)
       python3 scripts/make_tokenizer_fixtures.py [--out tests/data/tokenizers]
Deterministic: same tokenizers version -> same files.
"""
import argparse
import json
import os
import random

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

VOCAB_SIZE = 3000

FAMILIES = {
    "qwen2": dict(pattern=QWEN2_PATTERN,
                  special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                  added=["<tool_call>", "</tool_call>"],  # special=false in Qwen2's file too
                  ignore_merges=False, merges_as_strings=False),
    "llama3": dict(pattern=LLAMA3_PATTERN,
                   special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                            "<|end_header_id|>", "<|eot_id|>"],
                   added=[],
                   ignore_merges=True, merges_as_strings=True),
    "qwen2_nfc": dict(pattern=QWEN2_PATTERN,
                      special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                      # Non-special added tokens default to normalized=true: matched in the NFC text,
                      # by their NFC form ("<vie\u0323\u0302t>" matches "<vi\u1ec7t>" too). Not a Latin-1
                      # character: HF's ByteLevel decoder would turn one into a lone byte.
                      added=["<tool_call>", "</tool_call>", AddedToken("<vi\u1ec7t>", normalized=True)],
                      ignore_merges=False, merges_as_strings=False, normalizer="NFC"),
}

# Seed sentences of a small multilingual corpus; the generator recombines them.
SEED = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged that we'll need more tests, isn't it?",
    "She'd said they're fine, but I'm not sure you've checked.",
    "def forward(self, x):\n    return self.proj(x) * 0.5  # scale\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    '{"name": "fp8rl", "version": "0.1.0", "tags": ["rl", "fp8"]}',
    "Reinforcement learning with verifiable rewards: GRPO, DAPO, PPO.",
    "The answer is 42. Then 3.14159 * 2 = 6.28318, and 2024-05-17 was a Friday.",
    "Numbers: 1234567890, 1,000,000 and 0.000123; phone +1 (555) 010-9999.",
    "自然语言处理是人工智能的一个重要方向。我们今天训练一个模型。",
    "深度学习需要大量的数据和计算资源，强化学习也不例外。",
    "日本語のテキストも少し入れておきます。東京は晴れです。",
    "한국어 문장도 포함합니다. 오늘 날씨가 좋네요.",
    "Привет, мир! Это тестовое предложение на русском языке.",
    "مرحبا بالعالم، هذا نص تجريبي باللغة العربية.",
    "नमस्ते दुनिया, यह एक परीक्षण वाक्य है।",
    "Γειά σου κόσμε, αυτή είναι μια δοκιμή.",
    "Ça va? Très bien, merci. Où est la bibliothèque? Naïve café, résumé.",
    "Größe, Straße und Übermaß: das Äußere zählt.",
    "Emoji time 😀😃😄 👍🏽 ❤️ 🎉 and a family 👨‍👩‍👧‍👦 with flags 🇯🇵🇺🇸.",
    "Tabs\tand  double  spaces,\n\nblank lines,\r\nand CRLF endings.",
    "    indented code block\n        deeper\n",
    "Math: x^2 + y^2 = z^2, ∑_{i=1}^{n} i = n(n+1)/2, √2 ≈ 1.414, π ≈ 3.14.",
    "URLs like https://example.com/path?q=1&r=two#frag and emails a.b@c.org.",
    "!!! ??? ... --- *** ### $$$ %%% &&& ((( ))) [[[ ]]] {{{ }}}",
]


# Alphabets for made-up words, so the merges go beyond the seed sentences' few hundred words.
SYLLABLES = {
    "latin": ["ka", "to", "re", "min", "st", "ing", "ed", "er", "al", "qu", "th", "ch", "ou", "ie", "x", "z"],
    "cyrillic": ["ка", "то", "ре", "мин", "ст", "ов", "ий", "ая", "ть", "щ", "ж"],
    "greek": ["κα", "το", "ρε", "μι", "στ", "ος", "ης", "ει"],
}
RANGES = [(0x4E00, 0x4E00 + 600), (0xAC00, 0xAC00 + 300), (0x3041, 0x3096), (0x30A1, 0x30FA),
          (0x0905, 0x0939), (0x0627, 0x064A), (0x1F600, 0x1F64F)]


def corpus(seed: int = 0, lines: int = 8000):
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        k = rng.randint(1, 3)
        parts = [rng.choice(SEED) for _ in range(k)]
        for _ in range(rng.randint(2, 8)):
            if rng.random() < 0.6:
                sy = SYLLABLES[rng.choice(list(SYLLABLES))]
                word = "".join(rng.choice(sy) for _ in range(rng.randint(1, 4)))
                parts.append(word.capitalize() if rng.random() < 0.2 else word)
            else:
                lo, hi = rng.choice(RANGES)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 4))))
        if rng.random() < 0.3:
            parts.append(str(rng.randint(0, 10**rng.randint(1, 12))))
        out.append(" ".join(parts))
    return out


# The parity cases: each must give HF's ids and decode back to itself.
CASES = [
    "",
    "Hello, world!",
    "hello world",
    " leading space",
    "   three leading spaces",
    "trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "\n\n\n",
    "   \n   \n\t\n",
    " " * 17,
    "a" + " " * 5 + "b",
    "line1\n\n\n  line2  \n",
    "\r\r\n\n\r",
    # CJK and other scripts
    "你好，世界！",
    "自然语言处理是人工智能的一个重要方向。",
    "日本語のテキストです。カタカナとひらがな。",
    "한국어 텍스트 처리",
    "GPT-4是一个大模型，参数量约1.8万亿",
    "Привет, мир!",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "สวัสดีครับ",
    "שָׁלוֹם עוֹלָם",
    "Γειά σου κόσμε",
    # emoji, ZWJ, modifiers, flags
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 flag",
    "👍🏽👍🏿",
    "🇯🇵🇺🇸🇩🇪",
    "❤️❤",
    "I love 🍕 and 🍣!",
    "😀😃😄😁😆😅🤣😂",
    # combining marks
    "e\u0301 vs \u00e9",
    "A\u0308 vs \u00c4",
    "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307l\u036e\u0312\u036bg\u030c\u0317\u035a\u031ao",
    "\u0301 leading combining mark",
    "a\u0300\u0301\u0302\u0303\u0304",
    # digits
    "1234567890123",
    "3.14159265358979",
    "2024-01-01T12:34:56Z",
    "x=1000000, y=-42, z=0.5e-10",
    "１２３ fullwidth",
    "٣٤٥ arabic-indic",
    "Ⅻ ½ ² ³",
    "99999999999999999999999999999999",
    # contractions
    "I'm can't won't they're we've he'll she'd",
    "I'M CAN'T WON'T THEY'RE WE'VE HE'LL SHE'D",
    "'s 'S 't 're 've 'm 'll 'd",
    "don\u2019t curly apostrophe",
    "'\u017f long s",
    "rock'n'roll o'clock",
    # special / added tokens inside text
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "x<|endoftext|>y",
    "<|im_start|><|im_end|>",
    "<|im_sta partial <|im_end",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>",
    "a<|eot_id|>b<|end_of_text|>",
    "<tool_call>{\"name\": \"f\"}</tool_call>",
    "<<|im_end|>>",
    "<|endoftext|><|endoftext|>",
    # invalid-looking and unusual code points
    "\\xff\\xfe not bytes",
    "Ã©Ã¨ mojibake",
    "\ufffd replacement char",
    "\x00\x01\x1f\x7f controls",
    "zero\u200bwidth\u200cjoiners\u200d",
    "\ufeffBOM at start",
    "\U0010FFFF max code point",
    "\uffff noncharacter",
    "\ue000 private use",
    "next\u0085line",
    "line\u2028separator\u2029para",
    "no\u00a0break\u00a0space",
    "ideographic\u3000space",
    "mongolian\u180evowel",
    "thin\u2009space and\u202fnarrow",
    "\t\u000b\u000c vertical tab form feed",
    # code and punctuation
    "def f(x):\n    return x**2  # square\n",
    "if (a && b || !c) { return -1; }",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "!!!???...,,,;;;",
    "----====____",
    "https://example.com/a/b?c=d&e=f",
    "naïve café résumé",
    "Straße İstanbul ǅ",
    "The quick brown fox jumps over the lazy dog. " * 3,
    # NFC: decomposed vs precomposed Latin, canonical reordering, singletons, exclusions
    "e\u0301",
    "A\u030a and \u212b (angstrom sign) and \u00c5",
    "\u1e9b\u0323",
    "a\u0323\u0302 vs a\u0302\u0323 vs \u1ead",
    "\u0340\u0341 tone marks, \u2126 ohm, \u1f71 oxia, \u037e greek question mark",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 Stra\u00dfe U\u0308bermaa\u00df",
    "\u0958 \u0915\u093c devanagari qa (composition exclusion)",
    "o\u0308\u0304 \u022b \u00f6\u0304",
    # Hangul: conjoining jamo compose to syllables, LV + T too
    "\u1112\u1161\u11ab\u1100\u1173\u11af \ud55c\uae00",
    "\u1100\u1161\u11a8 \uac00\u11a8 \u1100\u1161",
    "\u110b\u1169\u1102\u1173\u11af \u1102\u1161\u11af\u1110\u1161\u1100\u1161",
    # CJK compatibility ideographs (NFC maps them to the unified ones)
    "\uf900\uf901\uf91d \u8c48",
    "\U0002f800\U0002f8a6 \u4e3d",
    "\uf9dc\ufa10\ufa2d compat",
    # Vietnamese, stacked diacritics, decomposed and precomposed
    "Tie\u0302\u0301ng Vie\u0323\u0302t co\u0301 da\u0302\u0301u",
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
    "Nguye\u0302\u0303n \u0110\u01b0\u0301c Ho\u0300a",
    # combining marks after added tokens (HF normalizes each stretch between them on its own)
    "<|im_end|>\u0301x",
    "<|im_start|>e\u0301<|im_end|>\u0308",
    "e<|endoftext|>\u0301",
    "<tool_call>\u0301</tool_call>a\u030a",
    "<vi\u1ec7t> and <vie\u0323\u0302t> and <vie\u0302\u0323t>",
]


def build(name, spec, lines, out_dir):
    tok = Tokenizer(models.BPE(ignore_merges=spec["ignore_merges"]))
    if spec.get("normalizer") == "NFC":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec["pattern"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=spec["special"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    if spec["added"]:
        tok.add_tokens(spec["added"])
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = spec["ignore_merges"]
    if spec["merges_as_strings"]:
        j["model"]["merges"] = [f"{a} {b}" for a, b in j["model"]["merges"]]
    text = json.dumps(j, ensure_ascii=False, separators=(",", ":"))
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    path = os.path.join(out_dir, name, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    # Reload what we wrote: the ids must come from the committed file, not the in-memory one.
    return Tokenizer.from_file(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tokenizers"))
    args = ap.parse_args()
    lines = corpus()
    toks = {name: build(name, spec, lines, args.out) for name, spec in FAMILIES.items()}
    cases = []
    for text in CASES:
        row = {"text": text}
        for name, tok in toks.items():
            ids = tok.encode(text, add_special_tokens=False).ids
            back = tok.decode(ids, skip_special_tokens=False)
            if tok.normalizer is None:
                assert back == text, f"{name}: HF itself does not round-trip {text!r}: {back!r}"
            else:
                nfc = tok.normalizer.normalize_str(text)
                assert back == nfc, f"{name}: HF decode(encode(s)) != NFC(s) for {text!r}: {back!r} vs {nfc!r}"
                row["nfc"] = back
            row[name] = ids
        cases.append(row)
    meta = {"tokenizers_version": tokenizers.__version__, "vocab_size": VOCAB_SIZE,
            "note": "ids are HF encode(text, add_special_tokens=False); made by scripts/make_tokenizer_fixtures.py"}
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "cases": cases}, f, ensure_ascii=True, indent=0)
    for name in toks:
        p = os.path.join(args.out, name, "tokenizer.json")
        print(f"{p}: {os.path.getsize(p)} bytes")
    print(f"cases.json: {len(cases)} cases")


if __name__ == "__main__":
    main()
