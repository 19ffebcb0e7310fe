// safetensors: round trip of every dtype, sharded checkpoints, one test per malformed-file error
// (each message names the file and the tensor), and a mutation fuzz of the header parser.
#include "core/hf/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/util/error.h"
#include "tests/test_util.h"

namespace st = fp8rl::safetensors;
using fp8rl::ConfigError;
using fp8rl::test::TempDir;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A file with a hand-written header: 8-byte length (the true one unless given), header, data.
std::string raw_file(const std::string& header, const std::string& data, std::optional<uint64_t> len = {}) {
  const uint64_t n = len.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

std::vector<uint8_t> pattern_bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

// A small valid file with three tensors and metadata.
std::string small_file(const std::string& path) {
  const auto a = pattern_bytes(2 * 3 * 2, 1), b = pattern_bytes(5 * 4, 2), c = pattern_bytes(7, 3);
  st::write_file(path,
                 {{"model.embed_tokens.weight", st::Dtype::BF16, {2, 3}, a.data(), a.size()},
                  {"model.norm.weight", st::Dtype::F32, {5}, b.data(), b.size()},
                  {"scale", st::Dtype::F8_E4M3, {7}, c.data(), c.size()}},
                 {{"format", "pt"}});
  return read_all(path);
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips through write_file and File") {
  TempDir dir;
  const std::string path = (dir.path() / "all.safetensors").string();
  std::vector<std::vector<uint8_t>> storage;
  std::vector<st::TensorToWrite> tensors;
  const st::Dtype all[] = {st::Dtype::BOOL, st::Dtype::U8,   st::Dtype::I8,  st::Dtype::I16,
                           st::Dtype::I32,  st::Dtype::I64,  st::Dtype::F16, st::Dtype::BF16,
                           st::Dtype::F32,  st::Dtype::F64,  st::Dtype::F8_E4M3, st::Dtype::F8_E5M2};
  uint8_t seed = 0;
  for (st::Dtype d : all) {
    const std::vector<int64_t> shape{3, 5};  // 15 elements: odd sizes exercise the 8-byte padding
    storage.push_back(pattern_bytes(15 * st::dtype_size(d), ++seed));
    tensors.push_back({"t_" + std::string(st::dtype_name(d)), d, shape, storage.back().data(), storage.back().size()});
  }
  tensors.push_back({"scalar", st::Dtype::F32, {}, storage[8].data(), 4});
  tensors.push_back({"empty", st::Dtype::BF16, {0, 4}, nullptr, 0});
  st::write_file(path, tensors, {{"format", "pt"}, {"producer", "fp8rl"}});

  const std::string bytes = read_all(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK(header_len % 8 == 0);  // the spec's padding: data region starts 8-byte aligned

  st::File f(path);
  REQUIRE(f.tensors().size() == tensors.size());
  CHECK(f.metadata().at("producer") == "fp8rl");
  for (const auto& w : tensors) {
    INFO(w.name);
    const st::TensorView& t = f.get(w.name);
    CHECK(t.dtype == w.dtype);
    CHECK(t.shape == w.shape);
    REQUIRE(t.nbytes == w.nbytes);
    if (w.nbytes) CHECK(std::memcmp(t.data, w.data, w.nbytes) == 0);
  }
  CHECK(f.get("scalar").numel() == 1);
  CHECK(f.get("empty").numel() == 0);
  // Laid out in the order given.
  CHECK(f.tensors()[0].name == "t_BOOL");
  for (const auto& d : all) CHECK(st::parse_dtype(st::dtype_name(d)) == d);
  CHECK_FALSE(st::parse_dtype("F4").has_value());
}

TEST_CASE("safetensors: the writer replaces a file atomically and rejects caller bugs") {
  TempDir dir;
  const std::string path = (dir.path() / "w.safetensors").string();
  small_file(path);
  const auto v = pattern_bytes(4, 9);
  st::write_file(path, {{"x", st::Dtype::F32, {1}, v.data(), 4}});
  CHECK(st::File(path).tensors().size() == 1);
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  CHECK(files == 1);  // no temporary left behind
  CHECK_THROWS_AS(st::write_file(path, {{"x", st::Dtype::F32, {2}, v.data(), 4}}), std::logic_error);
  CHECK_THROWS_AS(st::write_file(path, {{"x", st::Dtype::F32, {1}, v.data(), 4}, {"x", st::Dtype::F32, {1}, v.data(), 4}}),
                  std::logic_error);
}

TEST_CASE("safetensors: sharded checkpoint through model.safetensors.index.json") {
  TempDir dir;
  const auto a = pattern_bytes(8, 1), b = pattern_bytes(12, 2);
  st::write_file((dir.path() / "model-00001-of-00002.safetensors").string(),
                 {{"model.layers.0.mlp.up_proj.weight", st::Dtype::BF16, {2, 2}, a.data(), 8}});
  st::write_file((dir.path() / "model-00002-of-00002.safetensors").string(),
                 {{"lm_head.weight", st::Dtype::F16, {2, 3}, b.data(), 12}});
  const std::string index = R"({"metadata": {"total_size": 20}, "weight_map": {
      "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
      "lm_head.weight": "model-00002-of-00002.safetensors"}})";
  dir.write("model.safetensors.index.json", index);

  st::Checkpoint ck(dir.path().string());
  CHECK(ck.num_files() == 2);
  CHECK(ck.names() == std::vector<std::string>{"lm_head.weight", "model.layers.0.mlp.up_proj.weight"});
  CHECK(std::memcmp(ck.get("lm_head.weight").data, b.data(), 12) == 0);
  CHECK(ck.file_of("lm_head.weight").ends_with("model-00002-of-00002.safetensors"));
  const std::vector<int64_t> good{2, 3}, bad{3, 2};
  CHECK(ck.expect_shape("lm_head.weight", good).nbytes == 12);

  SECTION("shape disagreeing with the config names the shard and tensor") {
    REQUIRE_THROWS_CONTAINING(ck.expect_shape("lm_head.weight", bad), ConfigError,
                              "model-00002-of-00002.safetensors: tensor 'lm_head.weight' has shape [2, 3], config says [3, 2]");
  }
  SECTION("missing tensor, with a did-you-mean") {
    REQUIRE_THROWS_CONTAINING(ck.get("lm_head.weights"), ConfigError,
                              "tensor 'lm_head.weights' not found (did you mean 'lm_head.weight'?)");
  }
  SECTION("a shard the index lists but the directory lacks") {
    std::filesystem::remove(dir.path() / "model-00002-of-00002.safetensors");
    REQUIRE_THROWS_CONTAINING(st::Checkpoint(dir.path().string()), ConfigError,
                              "model-00002-of-00002.safetensors' (listed for tensor 'lm_head.weight') does not exist");
  }
  SECTION("a tensor the index lists but its shard lacks") {
    std::string idx = index;
    idx.replace(idx.find("\"lm_head.weight\""), 16, "\"lm_head.bias\"");
    dir.write("model.safetensors.index.json", idx);
    REQUIRE_THROWS_CONTAINING(st::Checkpoint(dir.path().string()), ConfigError,
                              "model-00002-of-00002.safetensors: tensor 'lm_head.bias' is listed in "
                              "model.safetensors.index.json but missing from this shard");
  }
  SECTION("an index without weight_map") {
    dir.write("model.safetensors.index.json", "{}");
    REQUIRE_THROWS_CONTAINING(st::Checkpoint(dir.path().string()), ConfigError, "missing object 'weight_map'");
  }
}

TEST_CASE("safetensors: single-file checkpoint and an empty directory") {
  TempDir dir;
  small_file((dir.path() / "model.safetensors").string());
  st::Checkpoint ck(dir.path().string());
  CHECK(ck.names().size() == 3);
  CHECK(ck.get("scale").dtype == st::Dtype::F8_E4M3);
  TempDir empty;
  REQUIRE_THROWS_CONTAINING(st::Checkpoint(empty.path().string()), ConfigError,
                            "no model.safetensors.index.json or model.safetensors");
}

TEST_CASE("safetensors: malformed files give one clear error naming file and tensor") {
  TempDir dir;
  const std::string path = (dir.path() / "bad.safetensors").string();
  const std::string data(16, '\x11');
  auto expect = [&](const std::string& bytes, const std::string& needle) {
    write_bytes(path, bytes);
    REQUIRE_THROWS_CONTAINING(st::File(path), ConfigError, needle);
    REQUIRE_THROWS_CONTAINING(st::File(path), ConfigError, path);
  };
  const std::string ok_entry = R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})";

  SECTION("missing file") {
    REQUIRE_THROWS_CONTAINING(st::File((dir.path() / "nope.safetensors").string()), ConfigError, "cannot open");
  }
  SECTION("shorter than the length field") { expect("abc", "truncated: 3 bytes"); }
  SECTION("header length beyond the file") { expect(raw_file(ok_entry, data, 1u << 20), "header length 1048576 exceeds"); }
  SECTION("absurd header length") { expect(raw_file(ok_entry, data, ~0ull), "exceeds"); }
  SECTION("truncated data region") {
    expect(raw_file(ok_entry, data.substr(0, 10)),
           "tensor 'w': data_offsets [0, 16] lie outside the data region of 10 bytes (truncated file?)");
  }
  SECTION("header is not JSON") { expect(raw_file("{\"w\": [", data), "header is not valid JSON"); }
  SECTION("header is not an object") { expect(raw_file("[1, 2]", data), "header is not a JSON object"); }
  SECTION("deeply nested header") { expect(raw_file(std::string(5000, '[') + std::string(5000, ']'), data), "nests deeper"); }
  SECTION("unknown dtype") {
    expect(raw_file(R"({"w": {"dtype": "F4", "shape": [2, 2], "data_offsets": [0, 16]}})", data),
           "tensor 'w': unknown dtype 'F4'");
  }
  SECTION("missing fields") {
    expect(raw_file(R"({"w": {"shape": [2, 2], "data_offsets": [0, 16]}})", data), "tensor 'w': missing string 'dtype'");
    expect(raw_file(R"({"w": {"dtype": "F32", "data_offsets": [0, 16]}})", data), "tensor 'w': missing array 'shape'");
    expect(raw_file(R"({"w": {"dtype": "F32", "shape": [4]}})", data), "tensor 'w': 'data_offsets' must be");
  }
  SECTION("negative or fractional dims and offsets") {
    expect(raw_file(R"({"w": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}})", data), "negative dimension");
    expect(raw_file(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-1, 16]}})", data), "'data_offsets' must be");
    expect(raw_file(R"({"w": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}})", data), "non-integer");
  }
  SECTION("offsets out of range and reversed") {
    expect(raw_file(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})", data), "lie outside the data region");
    expect(raw_file(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", data), "begin > end");
  }
  SECTION("shape disagreeing with the byte count") {
    expect(raw_file(R"({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}})", data),
           "tensor 'w': shape [2, 2] of BF16 needs 8 bytes but data_offsets [0, 16] hold 16");
    expect(raw_file(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}})", data),
           "needs too many bytes");
  }
  SECTION("overlapping tensors") {
    expect(raw_file(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
                    data),
           "tensors 'a' and 'b' overlap");
  }
  SECTION("bad __metadata__") { expect(raw_file(R"({"__metadata__": [1]})", data), "__metadata__ is not a JSON object"); }
  SECTION("missing tensor in a good file") {
    small_file(path);
    REQUIRE_THROWS_CONTAINING(st::File(path).get("model.norm.bias"), ConfigError, "bad.safetensors: no tensor 'model.norm.bias'");
  }
  SECTION("shape check against the config") {
    small_file(path);
    st::File f(path);
    const std::vector<int64_t> want{3, 2};
    REQUIRE_THROWS_CONTAINING(st::expect_shape(f.get("model.embed_tokens.weight"), f.path(), want), ConfigError,
                              "bad.safetensors: tensor 'model.embed_tokens.weight' has shape [2, 3], config says [3, 2]");
  }
}

// Thousands of mutations of a valid file: the reader either accepts it, with every span inside
// the file and consistent with its shape, or throws ConfigError. A crash or another exception
// type fails the test. (Runs in the normal build; ~1 s.)
TEST_CASE("safetensors: header parser survives random mutations (fuzz)") {
  TempDir dir;
  const std::string good_path = (dir.path() / "good.safetensors").string();
  const std::string good = small_file(good_path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, good.data(), 8);
  const std::string path = (dir.path() / "fuzz.safetensors").string();

  std::mt19937_64 rng(12345);
  auto uniform = [&](uint64_t n) { return n == 0 ? 0 : std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  static const char kJsonChars[] = "{}[]\",:0123456789-.eE \\u\0\xff";
  const std::string json_chars(kJsonChars, sizeof(kJsonChars) - 1);
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string b = good;
    const int kind = static_cast<int>(uniform(7));
    switch (kind) {
      case 0:  // truncate anywhere
        b.resize(uniform(b.size() + 1));
        break;
      case 1:  // random bytes in the header
        for (uint64_t k = 0, n = 1 + uniform(4); k < n; ++k) b[8 + uniform(header_len)] = static_cast<char>(uniform(256));
        break;
      case 2:  // JSON-ish characters in the header
        for (uint64_t k = 0, n = 1 + uniform(3); k < n; ++k) b[8 + uniform(header_len)] = json_chars[uniform(json_chars.size())];
        break;
      case 3: {  // a random header length, near the true one or anywhere
        const uint64_t len = uniform(2) ? header_len + uniform(33) - 16 : rng();
        for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(len >> (8 * i));
        break;
      }
      case 4: {  // change a digit (offsets, shapes) to another digit
        std::vector<size_t> digits;
        for (size_t i = 8; i < 8 + header_len; ++i)
          if (b[i] >= '0' && b[i] <= '9') digits.push_back(i);
        b[digits[uniform(digits.size())]] = static_cast<char>('0' + uniform(10));
        break;
      }
      case 5:  // insert or delete header bytes without fixing the length
        if (uniform(2)) b.insert(8 + uniform(header_len), 1, json_chars[uniform(json_chars.size())]);
        else b.erase(8 + uniform(header_len), 1);
        break;
      default:  // random garbage file
        b.resize(uniform(64));
        for (auto& c : b) c = static_cast<char>(uniform(256));
        break;
    }
    write_bytes(path, b);
    try {
      st::File f(path);
      ++accepted;
      uint64_t sum = 0;
      for (const auto& t : f.tensors()) {
        REQUIRE(t.nbytes == static_cast<size_t>(t.numel()) * st::dtype_size(t.dtype));
        REQUIRE(t.nbytes <= b.size());
        for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];  // touches every byte: out of range would fault
      }
      (void)sum;
    } catch (const ConfigError&) {
      ++rejected;
    }
  }
  INFO("accepted " << accepted << ", rejected " << rejected);
  CHECK(accepted > 0);
  CHECK(rejected > 1000);
}
