#include "core/hf/tokenizer.h"

#include "core/hf/config.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <queue>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/strings.h"
#include "core/hf/tokenizer_regex.h"
#include "core/hf/unicode.h"

namespace fp8rl::hf {

namespace {

using nlohmann::json;

// GPT-2's split, which ByteLevel(use_regex=true) applies.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Pieces longer than this are not cached (HF's limit too): long runs are rare and would evict
// the short, frequent pieces that make the cache worth having.
constexpr size_t kMaxCachedPiece = 256;
constexpr size_t kMaxCacheEntries = 1 << 17;

enum class IdKind : uint8_t { none, vocab, added, special };

struct PreTokStep {
  std::unique_ptr<TokenizerRegex> regex;
  bool keep_matches = true;  // Isolated: matches are pieces too; Removed: they are dropped
};

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

std::string dump_short(const json& j) {
  std::string s = j.dump();
  return s.size() > 120 ? s.substr(0, 117) + "..." : s;
}

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::vector<std::string> id_bytes;
  std::vector<IdKind> id_kind;
  std::unordered_map<std::string, int32_t> token_ids;     // vocab strings and added contents
  std::unordered_map<std::string, int32_t> bytes_to_id;   // vocab by the bytes it stands for
  std::array<int32_t, 256> byte_id{};
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left, right) -> (rank, merged)
  bool ignore_merges = false;

  // The normalizer: none, or NFC (a Sequence of only NFC is the same).
  bool nfc = false;

  struct Added {
    std::string content;
    std::string match;  // what is searched for: the normalized content if `normalized`
    int32_t id;
    bool normalized;
  };
  using AddedIndex = std::array<std::vector<size_t>, 256>;  // by first byte of `match`, longest first
  std::vector<Added> added;
  AddedIndex raw_index;         // normalized=false (special tokens): matched in the raw text
  AddedIndex normalized_index;  // normalized=true: matched in the normalized stretches between them
  bool any_normalized = false;

  std::vector<PreTokStep> steps;

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  [[noreturn]] void fail(const std::string& what) const { throw ConfigError(fmt::format("{}: {}", path, what)); }

  // A token id from the file, range-checked before it sizes the id tables (an id of 10^13
  // would allocate terabytes): [0, kMaxVocabSize), the bound config.json's vocab_size has too.
  int32_t read_id(const json& j, const std::string& what) const {
    if (!j.is_number_integer() || (j.is_number_unsigned() && j.get<uint64_t>() >= uint64_t(kMaxVocabSize)) ||
        j.get<int64_t>() < 0 || j.get<int64_t>() >= kMaxVocabSize)
      fail(fmt::format("{}: token id {} is not an integer in [0, {})", what, dump_short(j), kMaxVocabSize));
    return static_cast<int32_t>(j.get<int64_t>());
  }

  void set_id(int32_t id, std::string bytes, IdKind kind) {
    if (id < 0 || id >= kMaxVocabSize) fail(fmt::format("token id {} is not in [0, {})", id, kMaxVocabSize));
    if (static_cast<size_t>(id) >= id_bytes.size()) {
      id_bytes.resize(id + 1);
      id_kind.resize(id + 1, IdKind::none);
    }
    id_bytes[id] = std::move(bytes);
    id_kind[id] = kind;
  }

  void load_model(const json& m);
  void load_added(const json& a);
  void load_pre_tokenizer(const json& p);
  void check_supported(const json& j);
  void load_normalizer(const json& n);
  // Calls on_text(stretch) for the text between matches of `index` and on_token(id) for each
  // match, in order: leftmost match first, the longest at that position (HF's LeftmostLongest).
  template <class OnText>
  void split_added(std::string_view text, const AddedIndex& index, std::vector<int32_t>& out, OnText&& on_text) const;
  void encode_stretch(std::string_view text, std::vector<int32_t>& out) const;
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void merge_word(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::load_model(const json& m) {
  if (!m.is_object()) fail("'model' is not an object");
  if (auto t = m.find("type"); t != m.end() && *t != "BPE")
    fail(fmt::format("model.type is {}; only BPE (byte-level, as Qwen2/Llama 3 use) is supported", t->dump()));
  if (auto d = m.find("dropout"); d != m.end() && !d->is_null() && !(d->is_number() && d->get<double>() == 0.0))
    fail("model.dropout is set; BPE dropout is for training, not supported");
  if (m.value("byte_fallback", false)) fail("model.byte_fallback is true (SentencePiece-style BPE); not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (auto s = m.find(key); s != m.end() && !s->is_null() && *s != "")
      fail(fmt::format("model.{} is {}; not supported for byte-level BPE", key, s->dump()));
  ignore_merges = m.value("ignore_merges", false);

  auto vocab = m.find("vocab");
  if (vocab == m.end() || !vocab->is_object()) fail("model.vocab is missing or not an object");
  std::string bytes;
  for (const auto& [tok, idj] : vocab->items()) {
    if (!idj.is_number_integer()) fail(fmt::format("model.vocab['{}'] is not an integer id", tok));
    const int32_t id = read_id(idj, fmt::format("model.vocab['{}']", tok));
    token_ids.emplace(tok, id);
    // A token outside the byte map (none in a byte-level vocab) decodes to its own UTF-8, as HF does.
    const bool mapped = byte_level::token_to_bytes(tok, bytes);
    if (mapped) bytes_to_id.emplace(bytes, id);
    set_id(id, mapped ? bytes : tok, IdKind::vocab);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = token_ids.find(byte_level::byte_to_utf8(static_cast<uint8_t>(b)));
    if (it == token_ids.end())
      fail(fmt::format("model.vocab lacks the byte-level symbol '{}' for byte 0x{:02X}; not a byte-level BPE vocab",
                       byte_level::byte_to_utf8(static_cast<uint8_t>(b)), b));
    byte_id[b] = it->second;
  }

  auto mj = m.find("merges");
  if (mj == m.end() || !mj->is_array()) fail("model.merges is missing or not an array");
  merges.reserve(mj->size());
  int32_t rank = 0;
  for (const auto& e : *mj) {
    std::string a, b;
    if (e.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail(fmt::format("model.merges[{}] = '{}' is not two tokens separated by one space", rank, s));
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      fail(fmt::format("model.merges[{}] = {} is neither \"a b\" nor [\"a\", \"b\"]", rank, dump_short(e)));
    }
    auto ia = token_ids.find(a), ib = token_ids.find(b), iab = token_ids.find(a + b);
    if (ia == token_ids.end() || ib == token_ids.end() || iab == token_ids.end())
      fail(fmt::format("model.merges[{}] = ['{}', '{}']: '{}' is not in the vocab", rank, a, b,
                       ia == token_ids.end() ? a : ib == token_ids.end() ? b : a + b));
    // A pair listed twice keeps its last rank: HF collects the merges into a HashMap.
    merges.insert_or_assign(pair_key(ia->second, ib->second), std::make_pair(rank, iab->second));
    ++rank;
  }
}

void Tokenizer::Impl::load_added(const json& a) {
  if (a.is_null()) return;
  if (!a.is_array()) fail("'added_tokens' is not an array");
  for (const auto& t : a) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
        !t["content"].is_string())
      fail(fmt::format("added_tokens entry {} lacks an integer 'id' or a string 'content'", dump_short(t)));
    const std::string content = t["content"].get<std::string>();
    if (content.empty()) fail("added_tokens has an empty 'content'");
    for (const char* key : {"lstrip", "rstrip", "single_word"})
      if (t.value(key, false))
        fail(fmt::format("added token '{}' has {}=true; not supported (Qwen2/Llama 3 tokens have it false)", content, key));
    const int32_t id = read_id(t["id"], fmt::format("added token '{}'", content));
    const bool special = t.value("special", false);
    // HF's AddedToken default: special tokens are not normalized, the others are.
    const bool normalized = t.value("normalized", !special);
    set_id(id, content, special ? IdKind::special : IdKind::added);
    token_ids[content] = id;
    // HF matches a normalized token by its normalized form (in the normalized text).
    std::string match = normalized && nfc ? utf8::nfc(content) : content;
    added.push_back({content, std::move(match), id, normalized});
  }
  for (size_t i = 0; i < added.size(); ++i) {
    AddedIndex& index = added[i].normalized ? normalized_index : raw_index;
    index[static_cast<uint8_t>(added[i].match[0])].push_back(i);
    any_normalized = any_normalized || added[i].normalized;
  }
  for (AddedIndex* index : {&raw_index, &normalized_index})
    for (auto& v : *index)
      std::stable_sort(v.begin(), v.end(), [&](size_t x, size_t y) { return added[x].match.size() > added[y].match.size(); });
}

void Tokenizer::Impl::load_pre_tokenizer(const json& p) {
  if (p.is_null() || !p.is_object())
    fail("pre_tokenizer is missing; byte-level BPE needs a ByteLevel pre-tokenizer");
  std::vector<const json*> list;
  if (p.value("type", "") == "Sequence") {
    auto ps = p.find("pretokenizers");
    if (ps == p.end() || !ps->is_array()) fail("pre_tokenizer Sequence lacks 'pretokenizers'");
    for (const auto& q : *ps) list.push_back(&q);
  } else {
    list.push_back(&p);
  }
  bool byte_level_seen = false;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& q = *list[i];
    const std::string type = q.is_object() ? q.value("type", "") : "";
    const std::string where = fmt::format("{}: pre_tokenizer[{}] ({})", path, i, type);
    if (byte_level_seen) fail(fmt::format("pre_tokenizer[{}] ({}) comes after ByteLevel; ByteLevel must be last", i, type));
    if (type == "ByteLevel") {
      byte_level_seen = true;
      if (q.value("add_prefix_space", false)) fail(fmt::format("pre_tokenizer[{}] ByteLevel.add_prefix_space=true is not supported", i));
      if (q.value("use_regex", true)) steps.push_back({std::make_unique<TokenizerRegex>(kGpt2Pattern, where), true});
    } else if (type == "Split") {
      if (q.value("invert", false)) fail(fmt::format("pre_tokenizer[{}] Split.invert=true is not supported", i));
      const std::string behavior = q.value("behavior", "");
      if (behavior != "Isolated" && behavior != "Removed")
        fail(fmt::format("pre_tokenizer[{}] Split.behavior '{}' is not supported (Isolated, Removed are)", i, behavior));
      auto pat = q.find("pattern");
      std::string regex;
      if (pat != q.end() && pat->is_object() && pat->contains("Regex") && (*pat)["Regex"].is_string()) {
        regex = (*pat)["Regex"].get<std::string>();
      } else if (pat != q.end() && pat->is_object() && pat->contains("String") && (*pat)["String"].is_string()) {
        regex = "\\Q" + (*pat)["String"].get<std::string>() + "\\E";
      } else {
        fail(fmt::format("pre_tokenizer[{}] Split.pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}", i));
      }
      steps.push_back({std::make_unique<TokenizerRegex>(regex, where), behavior == "Isolated"});
    } else {
      fail(fmt::format("pre_tokenizer[{}] of type '{}' is not supported (ByteLevel, Split, Sequence are)", i, type));
    }
  }
  if (!byte_level_seen) fail("pre_tokenizer has no ByteLevel step; only byte-level BPE is supported");
}

void Tokenizer::Impl::load_normalizer(const json& n) {
  if (n.is_null()) return;
  auto refuse = [&](const std::string& type) {
    fail(fmt::format("normalizer '{}' is not supported (only null, NFC, or a Sequence of NFC); encoding without it "
                     "would give ids that differ from HF's on text it changes",
                     type));
  };
  const std::string type = n.is_object() ? n.value("type", "?") : "?";
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence") {
    auto ns = n.find("normalizers");
    if (ns == n.end() || !ns->is_array()) fail("normalizer Sequence lacks 'normalizers'");
    for (size_t i = 0; i < ns->size(); ++i) {
      const json& q = (*ns)[i];
      const std::string t = q.is_object() ? q.value("type", "?") : "?";
      if (t != "NFC") refuse(fmt::format("Sequence[{}]: {}", i, t));
      nfc = true;  // NFC twice is NFC once
    }
  } else {
    refuse(type);
  }
}

void Tokenizer::Impl::check_supported(const json& j) {
  if (auto d = j.find("decoder"); d != j.end() && !d->is_null() && !(d->is_object() && d->value("type", "") == "ByteLevel"))
    fail(fmt::format("decoder {} is not supported (ByteLevel is)", dump_short(*d)));
}

// ---- encode ------------------------------------------------------------------------------------

void Tokenizer::Impl::merge_word(std::string_view piece, std::vector<int32_t>& out) const {
  struct Sym {
    int32_t id, prev, next;
    uint32_t len;  // 0 once merged into its left neighbour
  };
  const int32_t n = static_cast<int32_t>(piece.size());
  std::vector<Sym> syms(n);
  for (int32_t i = 0; i < n; ++i) syms[i] = {byte_id[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1, 1};
  // (rank, left position, merged id): lowest rank first, then leftmost, as HF's BinaryHeap pops.
  using Item = std::tuple<int32_t, int32_t, int32_t>;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
  auto push_pair = [&](int32_t l) {
    const int32_t r = syms[l].next;
    if (r < 0) return;
    auto it = merges.find(pair_key(syms[l].id, syms[r].id));
    if (it != merges.end()) heap.emplace(it->second.first, l, it->second.second);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const auto [rank, l, merged] = heap.top();
    heap.pop();
    Sym& left = syms[l];
    if (left.len == 0 || left.next < 0) continue;
    // Stale entry: one side has changed since it was pushed.
    auto it = merges.find(pair_key(left.id, syms[left.next].id));
    if (it == merges.end() || it->second.second != merged) continue;
    Sym& right = syms[left.next];
    left.id = merged;
    left.len += right.len;
    left.next = right.next;
    right.len = 0;
    if (left.next >= 0) syms[left.next].prev = l;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(l);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = syms[i].next) out.push_back(syms[i].id);
}

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_id[static_cast<uint8_t>(piece[0])]);
    return;
  }
  if (ignore_merges) {
    if (auto it = bytes_to_id.find(std::string(piece)); it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kMaxCachedPiece;
  std::string key;
  if (cacheable) {
    key.assign(piece);
    std::lock_guard<std::mutex> lock(cache_mu);
    if (auto it = cache.find(key); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  merge_word(piece, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(std::move(key), std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(start), out.end()));
  }
}

void Tokenizer::Impl::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<std::string_view> pieces{text}, next;
  std::vector<std::pair<size_t, size_t>> matches;
  for (const auto& step : steps) {
    next.clear();
    for (std::string_view piece : pieces) {
      matches.clear();
      step.regex->find_all(piece, matches);
      size_t pos = 0;
      for (const auto& [b, e] : matches) {
        if (b > pos) next.push_back(piece.substr(pos, b - pos));
        if (step.keep_matches) next.push_back(piece.substr(b, e - b));
        pos = e;
      }
      if (pos < piece.size()) next.push_back(piece.substr(pos));
    }
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) bpe(piece, out);
}

template <class OnText>
void Tokenizer::Impl::split_added(std::string_view text, const AddedIndex& index, std::vector<int32_t>& out,
                                  OnText&& on_text) const {
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const Added* hit = nullptr;
    for (size_t k : index[static_cast<uint8_t>(text[i])]) {
      if (text.compare(i, added[k].match.size(), added[k].match) == 0) {
        hit = &added[k];
        break;  // longest first
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    on_text(text.substr(start, i - start));
    out.push_back(hit->id);
    i += hit->match.size();
    start = i;
  }
  on_text(text.substr(start));
}

void Tokenizer::Impl::encode_stretch(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string normalized;
  if (nfc && !utf8::nfc_trivially(text)) {
    normalized = utf8::nfc(text);
    text = normalized;
  }
  if (!any_normalized) {
    encode_ordinary(text, out);
    return;
  }
  split_added(text, normalized_index, out, [&](std::string_view rest) { encode_ordinary(rest, out); });
}

// ---- Tokenizer ---------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = std::filesystem::is_directory(path) ? (std::filesystem::path(path) / "tokenizer.json").string() : path;
  std::error_code ec;
  if (std::filesystem::exists(impl->path, ec) && !std::filesystem::is_regular_file(impl->path, ec))
    throw ConfigError(fmt::format("{}: not a regular file", impl->path));  // a FIFO would block the read
  std::ifstream in(impl->path);
  if (!in) throw ConfigError(fmt::format("{}: cannot open (is the tokenizer path an HF model directory?)", impl->path));
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: not valid JSON: {}", impl->path, without_library_tag(e.what())));
  }
  if (!j.is_object() || !j.contains("model")) impl->fail("not a tokenizer.json (no 'model')");
  impl->check_supported(j);
  impl->load_normalizer(j.value("normalizer", json()));
  impl->load_model(j["model"]);
  impl->load_added(j.value("added_tokens", json()));
  impl->load_pre_tokenizer(j.value("pre_tokenizer", json()));
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const size_t bad = utf8::first_invalid(text);
  if (bad != text.size())
    throw ConfigError(fmt::format("tokenizer: input text is not valid UTF-8 (byte 0x{:02X} at offset {}); "
                                  "HF tokenizers take only valid UTF-8, so there is no reference encoding for it",
                                  static_cast<uint8_t>(text[bad]), bad));
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  // As HF's AddedVocabulary::extract_and_normalize: the normalized=false tokens (special ones)
  // are found in the raw text; each stretch between them is normalized on its own (so a
  // combining mark right after a special token stays a lone mark), then searched for the
  // normalized=true tokens, and what is left is pre-tokenized and merged.
  m.split_added(text, m.raw_index, out, [&](std::string_view stretch) { m.encode_stretch(stretch, out); });
  return out;
}

const std::string& Tokenizer::id_to_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_bytes.size() || impl_->id_kind[id] == IdKind::none)
    throw ConfigError(fmt::format("{}: token id {} is not in the vocabulary (size {})", impl_->path, id, vocab_size()));
  return impl_->id_bytes[id];
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += id_to_bytes(id);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const { return utf8::to_valid_lossy(decode_bytes(ids)); }

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_bytes.size()); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->token_ids.find(std::string(token));
  if (it == impl_->token_ids.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_kind.size() && impl_->id_kind[id] == IdKind::special;
}

const std::string& Tokenizer::path() const { return impl_->path; }

// ---- StreamDecoder -----------------------------------------------------------------------------

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_->id_to_bytes(id);
  std::string out;
  const auto* p = reinterpret_cast<const uint8_t*>(pending_.data());
  size_t i = 0;
  while (i < pending_.size()) {
    const utf8::Scan sc = utf8::scan(p + i, pending_.size() - i);
    if (sc.truncated) break;  // only possible at the end: wait for the next token
    if (sc.ok) out.append(pending_, i, sc.len);
    else out += "\xEF\xBF\xBD";
    i += sc.len;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = utf8::to_valid_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace fp8rl::hf
