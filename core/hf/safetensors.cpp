#include "core/hf/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/strings.h"

namespace fp8rl::safetensors {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A real header is a few MB at most (a 150k-entry one is ~15 MB); anything larger is a corrupt
// length field, and refusing it keeps a bad file from making us parse gigabytes of garbage.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// top object -> tensor entry -> shape array; a deeper header is not a safetensors header, and
// refusing it early bounds the JSON parser's work on hostile input.
constexpr int kMaxHeaderDepth = 8;

struct DtypeInfo {
  Dtype dtype;
  const char* name;
  size_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},           {Dtype::I8, "I8", 1},
    {Dtype::I16, "I16", 2},   {Dtype::I32, "I32", 4},         {Dtype::I64, "I64", 8},
    {Dtype::F16, "F16", 2},   {Dtype::BF16, "BF16", 2},       {Dtype::F32, "F32", 4},
    {Dtype::F64, "F64", 8},   {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::F8_E5M2, "F8_E5M2", 1},
};

const DtypeInfo& info(Dtype d) {
  for (const auto& i : kDtypes)
    if (i.dtype == d) return i;
  FP8RL_CHECK(false, "unknown Dtype value");
}

std::string known_dtypes() {
  std::string s;
  for (const auto& i : kDtypes) s += (s.empty() ? "" : ", ") + std::string(i.name);
  return s;
}

// numel * elem_size, or nullopt on overflow / negative dims.
std::optional<uint64_t> byte_size(std::span<const int64_t> shape, size_t elem) {
  uint64_t n = elem;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  }
  return n;
}

int json_depth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
    else if (c == '}' || c == ']') --depth;
  }
  return max_depth;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string errno_str() { return std::strerror(errno); }

}  // namespace

std::string_view dtype_name(Dtype dtype) { return info(dtype).name; }

std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const auto& i : kDtypes)
    if (name == i.name) return i.dtype;
  return std::nullopt;
}

size_t dtype_size(Dtype dtype) { return info(dtype).size; }

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(std::span<const int64_t> shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// ---- File --------------------------------------------------------------------------------------

File::File(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below as not regular).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw ConfigError(fmt::format("{}: cannot open: {}", path, errno_str()));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string err = errno_str();
    ::close(fd);
    throw ConfigError(fmt::format("{}: cannot stat: {}", path, err));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ConfigError(fmt::format("{}: not a regular file", path));
  }
  if (file_size < 8) {
    ::close(fd);
    throw ConfigError(fmt::format("{}: truncated: {} bytes, shorter than the 8-byte header length", path, file_size));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const std::string map_err = map == MAP_FAILED ? errno_str() : "";
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) throw ConfigError(fmt::format("{}: cannot mmap: {}", path, map_err));
  map_ = map;
  map_size_ = file_size;

  // From here on the destructor does not run if we throw, so unmap by hand.
  try {
    const auto* base = static_cast<const uint8_t*>(map_);
    const uint64_t header_len = read_u64_le(base);
    if (header_len > file_size - 8)
      throw ConfigError(fmt::format(
          "{}: header length {} exceeds the {} bytes after the length field (truncated file or not safetensors)",
          path, header_len, file_size - 8));
    if (header_len > kMaxHeaderBytes)
      throw ConfigError(fmt::format("{}: header length {} is over the {} MB limit (corrupt file?)", path,
                                    header_len, kMaxHeaderBytes >> 20));
    if (header_len < 2) throw ConfigError(fmt::format("{}: header length {} is too short for a JSON object", path, header_len));
    const std::string_view header(reinterpret_cast<const char*>(base + 8), header_len);
    if (json_depth(header) > kMaxHeaderDepth)
      throw ConfigError(fmt::format("{}: header nests deeper than {} levels; not a safetensors header", path, kMaxHeaderDepth));
    json j;
    try {
      j = json::parse(header);
    } catch (const json::exception& e) {
      throw ConfigError(fmt::format("{}: header is not valid JSON: {}", path, without_library_tag(e.what())));
    }
    if (!j.is_object()) throw ConfigError(fmt::format("{}: header is not a JSON object", path));

    const uint64_t data_begin = 8 + header_len;
    const uint64_t data_size = file_size - data_begin;
    struct Range {
      uint64_t begin, end;
      size_t tensor;
    };
    std::vector<Range> ranges;
    for (const auto& item : j.items()) {
      // Not a structured binding: the lambda below captures `name` (clang < 16 cannot capture bindings).
      const std::string& name = item.key();
      const auto& entry = item.value();
      if (name == "__metadata__") {
        if (!entry.is_object()) throw ConfigError(fmt::format("{}: __metadata__ is not a JSON object", path));
        for (const auto& [k, v] : entry.items()) metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
        continue;
      }
      auto bad = [&](const std::string& what) {
        return ConfigError(fmt::format("{}: tensor '{}': {}", path, name, what));
      };
      if (!entry.is_object()) throw bad("header entry is not a JSON object");
      TensorView t;
      t.name = name;
      auto dt = entry.find("dtype");
      if (dt == entry.end() || !dt->is_string()) throw bad("missing string 'dtype'");
      auto parsed = parse_dtype(dt->get<std::string>());
      if (!parsed) throw bad(fmt::format("unknown dtype '{}' (known: {})", dt->get<std::string>(), known_dtypes()));
      t.dtype = *parsed;
      auto sh = entry.find("shape");
      if (sh == entry.end() || !sh->is_array()) throw bad("missing array 'shape'");
      for (const auto& d : *sh) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) throw bad(fmt::format("shape {} has a non-integer or negative dimension", sh->dump()));
        t.shape.push_back(d.get<int64_t>());
      }
      auto off = entry.find("data_offsets");
      if (off == entry.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
          !(*off)[1].is_number_unsigned())
        throw bad("'data_offsets' must be [begin, end] with non-negative integers");
      const uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
      if (begin > end) throw bad(fmt::format("data_offsets [{}, {}] has begin > end", begin, end));
      if (end > data_size)
        throw bad(fmt::format("data_offsets [{}, {}] lie outside the data region of {} bytes (truncated file?)", begin,
                              end, data_size));
      const auto expected = byte_size(t.shape, dtype_size(t.dtype));
      if (!expected || *expected != end - begin)
        throw bad(fmt::format("shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}", shape_str(t.shape),
                              dtype_name(t.dtype), expected ? std::to_string(*expected) : "too many", begin, end,
                              end - begin));
      t.data = base + data_begin + begin;
      t.nbytes = end - begin;
      ranges.push_back({begin, end, tensors_.size()});
      tensors_.push_back(std::move(t));
    }
    // Overlapping tensors would alias each other's bytes: never what a writer meant.
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const Range* prev = nullptr;
    for (const auto& r : ranges) {
      if (r.begin == r.end) continue;
      if (prev && r.begin < prev->end)
        throw ConfigError(fmt::format("{}: tensors '{}' and '{}' overlap in the data region", path,
                                      tensors_[prev->tensor].name, tensors_[r.tensor].name));
      prev = &r;
    }
    std::vector<TensorView> ordered;
    ordered.reserve(tensors_.size());
    for (const auto& r : ranges) ordered.push_back(std::move(tensors_[r.tensor]));
    tensors_ = std::move(ordered);
    for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

File::~File() {
  if (map_) ::munmap(map_, map_size_);
}

File::File(File&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_size_(std::exchange(other.map_size_, 0)),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)),
      metadata_(std::move(other.metadata_)) {}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (map_) ::munmap(map_, map_size_);
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

const TensorView& File::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw ConfigError(fmt::format("{}: no tensor '{}'", path_, name));
  return tensors_[it->second];
}

// ---- Checkpoint --------------------------------------------------------------------------------

Checkpoint::Checkpoint(const std::string& path) {
  const fs::path p(path);
  fs::path index, single;
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.safetensors.index.json")) index = p / "model.safetensors.index.json";
    else if (fs::exists(p / "model.safetensors")) single = p / "model.safetensors";
    else
      throw ConfigError(fmt::format("{}: no model.safetensors.index.json or model.safetensors in this directory", path));
  } else if (path.ends_with(".json")) {
    index = p;
  } else {
    single = p;
  }

  if (!single.empty()) {
    source_ = single.string();
    files_.push_back(std::make_unique<File>(source_));
    for (const auto& t : files_[0]->tensors()) where_.emplace(t.name, std::make_pair(size_t{0}, &t));
    return;
  }

  source_ = index.string();
  std::error_code ec;
  if (!fs::is_regular_file(index, ec)) throw ConfigError(fmt::format("{}: not a regular file", source_));
  std::ifstream in(source_);
  if (!in) throw ConfigError(fmt::format("{}: cannot open", source_));
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: not valid JSON: {}", source_, without_library_tag(e.what())));
  }
  auto wm = j.is_object() ? j.find("weight_map") : j.end();
  if (wm == j.end() || !wm->is_object())
    throw ConfigError(fmt::format("{}: missing object 'weight_map' (tensor name -> shard file)", source_));
  std::map<std::string, size_t> shard_index;
  for (const auto& [name, shard] : wm->items()) {
    if (!shard.is_string())
      throw ConfigError(fmt::format("{}: weight_map entry for tensor '{}' is not a file name", source_, name));
    const std::string file = shard.get<std::string>();
    if (!shard_index.count(file)) {
      const fs::path shard_path = index.parent_path() / file;
      if (!fs::exists(shard_path))
        throw ConfigError(fmt::format("{}: shard '{}' (listed for tensor '{}') does not exist", source_,
                                      shard_path.string(), name));
      shard_index.emplace(file, files_.size());
      files_.push_back(std::make_unique<File>(shard_path.string()));
    }
    const size_t fi = shard_index.at(file);
    const File& f = *files_[fi];
    if (!f.contains(name))
      throw ConfigError(fmt::format("{}: tensor '{}' is listed in {} but missing from this shard", f.path(), name,
                                    index.filename().string()));
    where_.emplace(name, std::make_pair(fi, &f.get(name)));
  }
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, w] : where_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    std::string hint;
    if (auto m = closest_match(name, names())) hint = fmt::format(" (did you mean '{}'?)", *m);
    throw ConfigError(fmt::format("{}: tensor '{}' not found{}", source_, name, hint));
  }
  return *it->second.second;
}

const std::string& Checkpoint::file_of(const std::string& name) const {
  get(name);
  return files_[where_.at(name).first]->path();
}

const TensorView& Checkpoint::expect_shape(const std::string& name, std::span<const int64_t> shape) const {
  const TensorView& t = get(name);
  safetensors::expect_shape(t, file_of(name), shape);
  return t;
}

void expect_shape(const TensorView& tensor, const std::string& file, std::span<const int64_t> shape) {
  if (!std::equal(tensor.shape.begin(), tensor.shape.end(), shape.begin(), shape.end()))
    throw ConfigError(fmt::format("{}: tensor '{}' has shape {}, config says {}", file, tensor.name,
                                  shape_str(tensor.shape), shape_str(shape)));
}

// ---- writer ------------------------------------------------------------------------------------

void write_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    FP8RL_CHECK(t.name != "__metadata__" && seen.insert(t.name).second,
                fmt::format("{}: duplicate or reserved tensor name '{}'", path, t.name));
    const auto expected = byte_size(t.shape, dtype_size(t.dtype));
    FP8RL_CHECK(expected && *expected == t.nbytes,
                fmt::format("{}: tensor '{}' of shape {} {} needs {} bytes, got {}", path, t.name, shape_str(t.shape),
                            dtype_name(t.dtype), expected ? *expected : 0, t.nbytes));
    FP8RL_CHECK(t.data != nullptr || t.nbytes == 0, fmt::format("{}: tensor '{}' has no data", path, t.name));
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // the spec's padding: data starts 8-byte aligned
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(head.size()) >> (8 * i));

  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw RuntimeFailure(fmt::format("{}: cannot create: {}", tmp, errno_str()));
  auto fail = [&](const char* what) {
    const std::string err = errno_str();
    ::close(fd);
    ::unlink(tmp.c_str());
    throw RuntimeFailure(fmt::format("{}: {}: {}", tmp, what, err));
  };
  auto write_all = [&](const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd, p, std::min<size_t>(n, 1u << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        fail("write failed");
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  };
  write_all(len_bytes, 8);
  write_all(head.data(), head.size());
  for (const auto& t : tensors) write_all(t.data, t.nbytes);
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw RuntimeFailure(fmt::format("{}: close failed: {}", tmp, errno_str()));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = errno_str();
    ::unlink(tmp.c_str());
    throw RuntimeFailure(fmt::format("{}: cannot rename to {}: {}", tmp, path, err));
  }
}

}  // namespace fp8rl::safetensors
