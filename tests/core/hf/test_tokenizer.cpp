// Tokenizer parity with HF `tokenizers` on small trained byte-level BPE tokenizers (Qwen2 and
// Llama 3 split patterns, and Qwen2's with the NFC normalizer; tests/data/tokenizers, made by
// scripts/make_tokenizer_fixtures.py), streaming decode, UTF-8 handling, NFC, and the refusal of
// tokenizer.json features we lack.
#include "core/hf/tokenizer.h"

#include <chrono>
#include <fstream>
#include <random>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/hf/tokenizer_regex.h"
#include "core/hf/unicode.h"
#include "tests/test_util.h"

using fp8rl::ConfigError;
using fp8rl::hf::StreamDecoder;
using fp8rl::hf::Tokenizer;
using fp8rl::test::TempDir;

namespace {

const std::string kData = FP8RL_TOKENIZER_DATA;

// Takes a string_view (not a std::string): g++ 13 warns about a reference returned from a call
// whose argument is a temporary std::string, though these are function-local statics.
const Tokenizer& tokenizer(std::string_view family) {
  static const Tokenizer qwen = Tokenizer::from_file(kData + "/qwen2/tokenizer.json");
  static const Tokenizer llama = Tokenizer::from_file(kData + "/llama3");  // a directory works too
  static const Tokenizer qwen_nfc = Tokenizer::from_file(kData + "/qwen2_nfc");
  return family == "qwen2" ? qwen : family == "llama3" ? llama : qwen_nfc;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder dec(tok);
  std::string out;
  for (int32_t id : ids) out += dec.push(id);
  return out + dec.finish();
}

// Printable form of a string for INFO messages.
std::string show(const std::string& s) { return nlohmann::json(s).dump(); }

}  // namespace

// Under NFC (qwen2_nfc), decode(encode(s)) is the normalized text, which cases.json holds as
// "nfc" (HF's own decode(encode(s)), checked by the script to be normalize_str(s)).
TEST_CASE("tokenizer: ids equal HF's on every parity case, and decode(encode(s)) == s (NFC(s) under NFC)") {
  const auto cases = read_json(kData + "/cases.json");
  REQUIRE(cases["cases"].size() > 100);
  for (const std::string family : {"qwen2", "llama3", "qwen2_nfc"}) {
    const Tokenizer& tok = tokenizer(family);
    const bool nfc = family == "qwen2_nfc";
    int mismatches = 0, normalized = 0;
    for (const auto& c : cases["cases"]) {
      const std::string text = c["text"].get<std::string>();
      const auto want = c[family].get<std::vector<int32_t>>();
      const std::string back = nfc ? c["nfc"].get<std::string>() : text;
      INFO(family << " " << show(text));
      const auto got = tok.encode(text);
      CHECK(got == want);
      mismatches += got != want;
      normalized += back != text;
      CHECK(tok.decode(got) == back);
      CHECK(stream_decode(tok, got) == back);
    }
    if (nfc) CHECK(normalized >= 15);  // the cases do exercise the normalizer
    INFO(family);
    CHECK(mismatches == 0);
  }
}

TEST_CASE("tokenizer: added and special tokens are matched inside text before BPE") {
  const Tokenizer& qwen = tokenizer("qwen2");
  const int32_t im_start = *qwen.token_to_id("<|im_start|>"), im_end = *qwen.token_to_id("<|im_end|>");
  CHECK(qwen.is_special(im_start));
  const auto ids = qwen.encode("<|im_start|>user\nhi<|im_end|>");
  REQUIRE(ids.size() >= 3);
  CHECK(ids.front() == im_start);
  CHECK(ids.back() == im_end);
  // Non-special added tokens match too, but are not special.
  const int32_t tool = *qwen.token_to_id("<tool_call>");
  CHECK_FALSE(qwen.is_special(tool));
  CHECK(qwen.encode("a<tool_call>b")[1] == tool);
  // Another family's special tokens are ordinary text.
  CHECK(qwen.encode("<|eot_id|>").size() > 1);
  CHECK(tokenizer("llama3").encode("<|eot_id|>") == std::vector<int32_t>{*tokenizer("llama3").token_to_id("<|eot_id|>")});
  // A vocab entry is looked up in tokenizer.json's byte-level spelling.
  CHECK(qwen.token_to_id("Ġ").has_value());
  CHECK(qwen.id_to_bytes(*qwen.token_to_id("Ġ")) == " ");
  CHECK(qwen.vocab_size() >= 3000);
}

TEST_CASE("tokenizer: streaming decode holds back an emoji split across byte tokens") {
  const Tokenizer& tok = tokenizer("qwen2");
  // U+1F99C (parrot) is not in the training corpus: it is split over several tokens (F0 9F is a
  // merge, the rest are single bytes), so some pushes complete nothing.
  const std::string parrot = "\xF0\x9F\xA6\x9C";
  const auto ids = tok.encode("hi " + parrot + "!");
  StreamDecoder dec(tok);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(dec.push(id));
  int empty_pushes = 0;
  for (const auto& p : pieces) {
    empty_pushes += p.empty();
    CHECK(fp8rl::utf8::is_valid(p));
  }
  CHECK(empty_pushes >= 1);
  CHECK(ids.size() >= 5);  // 'hi', ' ', >= 2 tokens for the parrot, '!'
  std::string all;
  for (const auto& p : pieces) all += p;
  CHECK(all == "hi " + parrot + "!");
  CHECK(dec.finish().empty());

  SECTION("bytes that can never complete become U+FFFD where decode() puts them") {
    const int32_t b_e2 = *tok.token_to_id("â"), b_lparen = *tok.token_to_id("(");  // bytes 0xE2, '('
    StreamDecoder d(tok);
    CHECK(d.push(b_e2).empty());  // could still be the start of a 3-byte character
    CHECK(d.push(b_lparen) == "\xEF\xBF\xBD(");
    CHECK(d.push(b_e2).empty());
    CHECK(d.finish() == "\xEF\xBF\xBD");  // cut short at the end
    CHECK(tok.decode(std::vector<int32_t>{b_e2, b_lparen, b_e2}) == "\xEF\xBF\xBD(\xEF\xBF\xBD");
    CHECK(tok.decode_bytes(std::vector<int32_t>{b_e2, b_lparen}) == "\xE2(");
  }
  SECTION("stream == decode on random byte-token sequences") {
    std::mt19937 rng(7);
    for (int k = 0; k < 500; ++k) {
      std::vector<int32_t> seq;
      for (int i = 0, n = static_cast<int>(rng() % 12); i < n; ++i)
        seq.push_back(*tok.token_to_id(fp8rl::byte_level::byte_to_utf8(static_cast<uint8_t>(0x80 + rng() % 0x78))));
      INFO(k);
      CHECK(stream_decode(tok, seq) == tok.decode(seq));
    }
  }
  SECTION("an id outside the vocabulary") {
    StreamDecoder d(tok);
    REQUIRE_THROWS_CONTAINING(d.push(1 << 20), ConfigError, "token id 1048576 is not in the vocabulary");
    REQUIRE_THROWS_CONTAINING(tok.decode(std::vector<int32_t>{-1}), ConfigError, "token id -1");
  }
}

TEST_CASE("tokenizer: invalid UTF-8 input is refused, not repaired") {
  const Tokenizer& tok = tokenizer("llama3");
  for (const std::string& bad : {std::string("\xFF"), std::string("ab\xE2\x82"), std::string("\xC0\xAF overlong"),
                                std::string("\xED\xA0\x80 surrogate"), std::string("\xF4\x90\x80\x80 > U+10FFFF"),
                                std::string("ok \x80")}) {
    INFO(show(fp8rl::utf8::to_valid_lossy(bad)));
    REQUIRE_THROWS_CONTAINING(tok.encode(bad), ConfigError, "not valid UTF-8");
  }
  REQUIRE_THROWS_CONTAINING(tok.encode("ab\xE2\x82"), ConfigError, "(byte 0xE2 at offset 2)");
}

TEST_CASE("utf8: NFC (utf8proc)") {
  using fp8rl::utf8::nfc;
  CHECK(nfc("") == "");
  CHECK(nfc("plain ascii") == "plain ascii");
  CHECK(nfc("e\xCC\x81") == "\xC3\xA9");                              // e + U+0301 -> U+00E9
  CHECK(nfc("\xC3\xA9") == "\xC3\xA9");                               // already composed
  CHECK(nfc("A\xCC\x8A") == "\xC3\x85");                              // A + ring -> U+00C5
  CHECK(nfc("\xE2\x84\xAB") == "\xC3\x85");                          // U+212B angstrom (singleton)
  CHECK(nfc("\xE1\xBA\x9B\xCC\xA3") == "\xE1\xBA\x9B\xCC\xA3");  // U+1E9B U+0323 stays
  CHECK(nfc("a\xCC\x82\xCC\xA3") == "\xE1\xBA\xAD");               // reordered, then U+1EAD
  CHECK(nfc("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB") == "\xED\x95\x9C");  // jamo -> U+D55C
  CHECK(nfc("\xEF\xA4\x80") == "\xE8\xB1\x88");                      // U+F900 -> U+8C48
  CHECK(nfc("\xE0\xA5\x98") == "\xE0\xA4\x95\xE0\xA4\xBC");       // U+0958: excluded from composition
  CHECK(nfc(std::string("a\0e\xCC\x81", 5)) == std::string("a\0\xC3\xA9", 4));  // U+0000 is a character
  CHECK(fp8rl::utf8::nfc_trivially("caf\xC3\xA9"));  // below U+0300
  CHECK_FALSE(fp8rl::utf8::nfc_trivially("e\xCC\x81"));
  REQUIRE_THROWS_AS(nfc("e\xCC\x81 \xFF"), std::invalid_argument);

  SECTION("split at normalization boundaries == one utf8proc call, on random mixes") {
    // Starters that compose with what follows (e, a, A, o, ka, Hangul L/LV), marks (in both
    // orders, the kana voicing mark), Hangul V/T, compatibility ideographs, CJK, kana, Cyrillic.
    const std::vector<char32_t> palette = {'e',    'a',    'A',    'o',     ' ',     0x00E9,  0x0301,  0x0323,
                                           0x0302, 0x0308, 0x0304, 0x304B,  0x3099,  0x30AB,  0x1100,  0x1161,
                                           0x11A8, 0xAC00, 0xAC01, 0xF900,  0x2F800, 0x4E00,  0x0438,  0x0306,
                                           0x0958, 0x093C, 0x0915, 0x1E9B,  0x212B,  0x3400,  0x20000, 0x0340};
    std::mt19937 rng(11);
    for (int k = 0; k < 3000; ++k) {
      std::string s;
      for (int i = 0, n = static_cast<int>(rng() % 10); i < n; ++i) fp8rl::utf8::append(s, palette[rng() % palette.size()]);
      INFO(show(s));
      CHECK(nfc(s) == fp8rl::utf8::nfc_whole(s));
    }
  }
}

TEST_CASE("tokenizer: NFC applies to the stretches between special tokens, as in HF") {
  const Tokenizer& tok = tokenizer("qwen2_nfc");
  const Tokenizer& plain = tokenizer("qwen2");
  const std::string composed = "caf\xC3\xA9 Vi\xE1\xBB\x87t", decomposed = "cafe\xCC\x81 Vie\xCC\xA3\xCC\x82t";
  CHECK(tok.encode(decomposed) == tok.encode(composed));
  CHECK(plain.encode(decomposed) != plain.encode(composed));
  CHECK(tok.decode(tok.encode(decomposed)) == composed);
  // A combining mark after a special token is not composed with the token's last character.
  const int32_t im_end = *tok.token_to_id("<|im_end|>");
  const auto ids = tok.encode("<|im_end|>\xCC\x81");
  REQUIRE(ids.size() >= 2);
  CHECK(ids[0] == im_end);
  CHECK(tok.decode(ids) == "<|im_end|>\xCC\x81");
  // A normalized=true added token matches by its NFC form, so a decomposed spelling matches too.
  const int32_t viet = *tok.token_to_id("<vi\xE1\xBB\x87t>");
  CHECK_FALSE(tok.is_special(viet));
  CHECK(tok.encode("<vie\xCC\xA3\xCC\x82t>") == std::vector<int32_t>{viet});
  CHECK(tok.encode("x<vi\xE1\xBB\x87t>")[1] == viet);
  // A Sequence of only NFC is NFC.
  TempDir dir;
  auto j = read_json(kData + "/qwen2_nfc/tokenizer.json");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  const Tokenizer seq = Tokenizer::from_file(dir.write("tokenizer.json", j.dump()));
  CHECK(seq.encode(decomposed) == tok.encode(decomposed));
}

TEST_CASE("utf8: scan, lossy repair like Rust's from_utf8_lossy, incomplete tails") {
  using namespace fp8rl::utf8;
  CHECK(is_valid("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  CHECK(first_invalid("ab\xFF") == 2);
  CHECK(to_valid_lossy("\xF0\x9F\x98x") == "\xEF\xBF\xBDx");              // one U+FFFD per maximal subpart
  CHECK(to_valid_lossy("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");        // C0 never starts a sequence
  CHECK(to_valid_lossy("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: 3 subparts
  CHECK(incomplete_tail("a\xF0\x9F\x98") == 3);
  CHECK(incomplete_tail("a\xE2\x82") == 2);
  CHECK(incomplete_tail("a\xE2") == 1);
  CHECK(incomplete_tail("a\xE2\x28") == 0);
  CHECK(incomplete_tail("\xF0\x9F\x98\x80") == 0);
  CHECK(fp8rl::byte_level::byte_to_utf8(' ') == "\xC4\xA0");  // 'Ġ'
  CHECK(fp8rl::byte_level::byte_to_utf8('\n') == "\xC4\x8A");  // 'Ċ'
  for (int b = 0; b < 256; ++b) CHECK(fp8rl::byte_level::char_to_byte(fp8rl::byte_level::byte_to_char(static_cast<uint8_t>(b))) == b);
}

TEST_CASE("tokenizer: \\s follows Oniguruma's Unicode White_Space (U+0085 included)") {
  CHECK(fp8rl::hf::rewrite_whitespace_classes(R"(a\sb)").find("\\x{85}") != std::string::npos);
  CHECK(fp8rl::hf::rewrite_whitespace_classes(R"([^\s\p{L}])").starts_with("[^\\x{9}-\\x{D}"));
  CHECK(fp8rl::hf::rewrite_whitespace_classes(R"(\\s)") == R"(\\s)");  // an escaped backslash, then 's'
  fp8rl::hf::TokenizerRegex re(R"(\s+)", "test");
  std::vector<std::pair<size_t, size_t>> m;
  re.find_all("a\xC2\x85" "b", m);  // U+0085 NEL
  REQUIRE(m.size() == 1);
  CHECK(m[0] == std::make_pair(size_t{1}, size_t{3}));
}

TEST_CASE("tokenizer: long runs (JIT stack fallback, BPE on a long word)") {
  for (const std::string family : {"qwen2", "llama3", "qwen2_nfc"}) {
    const Tokenizer& tok = tokenizer(family);
    const std::string spaces(1 << 20, ' ');
    CHECK(tok.decode(tok.encode(spaces)) == spaces);
    const std::string letters(200000, 'a');
    CHECK(tok.decode(tok.encode(letters)) == letters);
    std::string mixed;
    for (int i = 0; i < 20000; ++i) mixed += "x \n\t";
    CHECK(tok.decode(tok.encode(mixed)) == mixed);
  }
}

TEST_CASE("tokenizer: unsupported or malformed tokenizer.json is refused with the file and field") {
  TempDir dir;
  const auto base = read_json(kData + "/qwen2/tokenizer.json");
  auto expect = [&](const nlohmann::json& j, const std::string& needle) {
    const std::string path = dir.write("tokenizer.json", j.dump());
    REQUIRE_THROWS_CONTAINING(Tokenizer::from_file(path), ConfigError, needle);
    REQUIRE_THROWS_CONTAINING(Tokenizer::from_file(path), ConfigError, path);
  };
  auto with = [&](auto&& edit) {
    nlohmann::json j = base;
    edit(j);
    return j;
  };
  expect(with([](auto& j) { j["normalizer"] = {{"type", "NFKC"}}; }), "normalizer 'NFKC' is not supported");
  expect(with([](auto& j) { j["normalizer"] = {{"type", "Lowercase"}}; }), "normalizer 'Lowercase' is not supported");
  expect(with([](auto& j) {
           j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
         }),
         "normalizer 'Sequence[1]: Lowercase' is not supported");
  expect(with([](auto& j) { j["model"]["type"] = "WordPiece"; }), "only BPE");
  expect(with([](auto& j) { j["model"]["byte_fallback"] = true; }), "byte_fallback");
  expect(with([](auto& j) { j["model"]["merges"][0] = "a b c"; }), "model.merges[0]");
  expect(with([](auto& j) { j["model"]["merges"][1] = {"zz_not_a_token", "x"}; }), "'zz_not_a_token' is not in the vocab");
  expect(with([](auto& j) { j["model"]["vocab"].erase("Ġ"); }), "lacks the byte-level symbol");
  expect(with([](auto& j) { j["added_tokens"][0]["lstrip"] = true; }), "lstrip=true; not supported");
  expect(with([](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithNext"; }),
         "Split.behavior 'MergedWithNext'");
  expect(with([](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; }),
         "cannot compile pattern '(unclosed'");
  expect(with([](auto& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }), "type 'Whitespace' is not supported");
  expect(with([](auto& j) { j["pre_tokenizer"] = nullptr; }), "pre_tokenizer is missing");
  expect(with([](auto& j) { j["decoder"] = {{"type", "WordPiece"}}; }), "decoder");
  std::ofstream(dir.path() / "broken.json") << "{";
  REQUIRE_THROWS_CONTAINING(Tokenizer::from_file((dir.path() / "broken.json").string()), ConfigError, "not valid JSON");
  REQUIRE_THROWS_CONTAINING(Tokenizer::from_file((dir.path() / "missing.json").string()), ConfigError, "cannot open");
}

TEST_CASE("tokenizer: GPT-2 style ByteLevel(use_regex=true) pre-tokenizer") {
  TempDir dir;
  auto j = read_json(kData + "/qwen2/tokenizer.json");
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  const Tokenizer tok = Tokenizer::from_file(dir.write("tokenizer.json", j.dump()));
  const std::string text = "Hello world, it's 2024!\n  ok";
  CHECK(tok.decode(tok.encode(text)) == text);
}

// Hidden: `fp8rl_hf_tests "[.bench]"` prints encode throughput on ~1 MB of mixed text.
TEST_CASE("tokenizer: encode speed", "[.bench]") {
  const auto cases = read_json(kData + "/cases.json");
  std::vector<std::string> texts;
  for (const auto& c : cases["cases"]) texts.push_back(c["text"].get<std::string>());
  // Mixed text with fresh numbers and made-up words, so the piece cache does not see only repeats.
  std::mt19937 rng(1);
  std::string corpus;
  while (corpus.size() < (1 << 20)) {
    corpus += texts[rng() % texts.size()];
    corpus += ' ';
    corpus += std::to_string(rng());
    corpus += ' ';
    for (int i = 0, n = static_cast<int>(rng() % 6); i < n; ++i) corpus += "abcdefghijklmnopqrstuvwxyz"[rng() % 26];
    corpus += '\n';
  }
  for (const std::string family : {"qwen2", "llama3", "qwen2_nfc"}) {
    const Tokenizer tok = Tokenizer::from_file(kData + "/" + family + "/tokenizer.json");  // cold cache
    size_t ntok = 0;
    double best = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      ntok = tok.encode(corpus).size();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("encode %s: %.2f MB in %.1f ms (best of 5) = %.1f MB/s, %zu tokens\n", family.c_str(),
                corpus.size() / 1e6, best * 1e3, corpus.size() / 1e6 / best, ntok);
    // First pass, cache cold.
    const Tokenizer cold = Tokenizer::from_file(kData + "/" + family + "/tokenizer.json");
    const auto t0 = std::chrono::steady_clock::now();
    (void)cold.encode(corpus);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("encode %s (cold cache): %.1f MB/s\n", family.c_str(), corpus.size() / 1e6 / s);
  }
}
