// HF `tokenizer.json` for byte-level BPE models (Qwen2/Qwen2.5/Qwen3, Llama 3, GPT-2 style).
//
// encode(text) gives the ids HF `tokenizers` gives for `tokenizer.encode(text,
// add_special_tokens=False)`: no BOS/EOS is added (chat templates write them as text), so the
// post_processor of tokenizer.json is not used. The pipeline, as HF runs it:
//   1. added tokens with normalized=false (special tokens are) are found in the raw text,
//      longest match first at the leftmost position, and become their ids;
//   2. each stretch between them is normalized on its own (NFC, if the normalizer says so), and
//      added tokens with normalized=true are found in it the same way, by their normalized form;
//   3. each stretch left is pre-tokenized: the `Split` regexes of the pre_tokenizer (behavior
//      Isolated or Removed), then ByteLevel (use_regex=true adds GPT-2's split);
//   4. each piece's bytes are merged by BPE rank (lowest rank first, leftmost on ties), with a
//      cache of pieces seen before; `ignore_merges` (Llama 3) takes a piece found whole in the
//      vocab as is.
// Decoding does not undo the normalizer: decode(encode(s)) is NFC(s) (stretchwise) under NFC.
// Supported tokenizer.json: model BPE (merges as "a b" or ["a", "b"]), pre_tokenizer ByteLevel or
// Sequence[Split..., ByteLevel], decoder ByteLevel, normalizer null, NFC (as the real
// Qwen2/Qwen2.5/Qwen3 tokenizer.json has; through utf8proc) or a Sequence of only NFC. Anything
// else is refused with a ConfigError naming the file and the field, never skipped: other
// normalizers (NFKC, Lowercase, ...), added tokens with lstrip/rstrip/single_word,
// byte_fallback, dropout.
//
// Input must be valid UTF-8 (HF takes Rust strings, which always are): encode throws
// ConfigError for anything else rather than guessing a repair.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fp8rl::hf {

class Tokenizer {
 public:
  // Reads `path` (a tokenizer.json, or a directory holding one). Throws ConfigError naming the
  // file and field on anything unsupported or malformed.
  static Tokenizer from_file(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Thread-safe (the piece cache is locked).
  std::vector<int32_t> encode(std::string_view text) const;

  // The bytes the ids stand for (added tokens give their content). Throws ConfigError on an id
  // outside the vocabulary.
  std::string decode_bytes(std::span<const int32_t> ids) const;
  // decode_bytes with ill-formed UTF-8 replaced by U+FFFD, as HF decode does.
  std::string decode(std::span<const int32_t> ids) const;

  // max id + 1 over vocab and added tokens.
  int32_t vocab_size() const;
  // The id of an added token's content ("<|im_end|>") or of a vocab entry as tokenizer.json
  // writes it ("Ġthe").
  std::optional<int32_t> token_to_id(std::string_view token) const;
  bool is_special(int32_t id) const;
  // The bytes of one id (see decode_bytes).
  const std::string& id_to_bytes(int32_t id) const;
  const std::string& path() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns generated ids into text as they arrive: returns only complete UTF-8 and holds back a
// trailing sequence a later token may complete (an emoji split over several byte tokens).
// Bytes that can never become valid are emitted as U+FFFD, exactly where decode() puts them, so
// the concatenation of every push() and finish() equals decode(all ids).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tok_(&tokenizer) {}
  // Text completed by `id` (possibly empty).
  std::string push(int32_t id);
  // What is still held back, repaired with U+FFFD; resets the decoder.
  std::string finish();

 private:
  const Tokenizer* tok_;
  std::string pending_;
};

}  // namespace fp8rl::hf
