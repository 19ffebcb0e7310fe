// safetensors files (https://github.com/huggingface/safetensors): read through mmap, write
// atomically, and sharded checkpoints through `model.safetensors.index.json`.
//
// Layout of one file: 8-byte little-endian u64 N, then N bytes of JSON header
// {"name": {"dtype": "BF16", "shape": [a, b], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"k": "v"}}, then the data region; offsets are relative to its start.
//
// Everything read from a file is validated before a byte of tensor data is handed out: a bad
// file (truncated, wrong header length, offsets out of range, unknown dtype, ...) throws
// ConfigError naming the file and, where there is one, the tensor. Host-only: no ATen here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fp8rl::safetensors {

// The dtype strings of the safetensors spec.
enum class Dtype { BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };

std::string_view dtype_name(Dtype dtype);            // "BF16", "F8_E4M3", ...
std::optional<Dtype> parse_dtype(std::string_view name);
size_t dtype_size(Dtype dtype);                       // bytes per element

// One tensor of a mapped file. `data` points into the mapping and stays valid as long as the
// File (or Checkpoint) that returned it is alive.
struct TensorView {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;        // == numel() * dtype_size(dtype), checked on open

  int64_t numel() const;
};

// "[a, b]" for messages.
std::string shape_str(std::span<const int64_t> shape);

// One .safetensors file, mapped read-only. The header is parsed and validated in the
// constructor; afterwards every lookup is a hash-map access.
class File {
 public:
  // Throws ConfigError naming `path` (and the tensor) if the file is missing or malformed.
  explicit File(const std::string& path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;

  const std::string& path() const { return path_; }
  // In data-offset order (the order the writer laid them out).
  const std::vector<TensorView>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Throws ConfigError "<file>: no tensor 'x'" if absent.
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights: a directory holding `model.safetensors.index.json` (sharded) or
// `model.safetensors`, or the path of one .safetensors / index file. All shards are opened and
// validated in the constructor, so a missing shard or a tensor the index lists but its shard
// lacks is reported before any loading starts.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& path);

  // Sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  // Throws ConfigError "<checkpoint>: tensor 'x' not found (did you mean 'y'?)".
  const TensorView& get(const std::string& name) const;
  // The shard file holding `name` (for messages).
  const std::string& file_of(const std::string& name) const;
  // get(name), then throws ConfigError
  // "<file>: tensor 'x' has shape [a, b], config says [c, d]" if the shapes differ.
  const TensorView& expect_shape(const std::string& name, std::span<const int64_t> shape) const;
  // The index file, or the single file.
  const std::string& source() const { return source_; }
  size_t num_files() const { return files_.size(); }

 private:
  std::string source_;
  std::vector<std::unique_ptr<File>> files_;
  std::unordered_map<std::string, std::pair<size_t, const TensorView*>> where_;
};

// Throws ConfigError "<file>: tensor 'x' has shape [a, b], config says [c, d]".
void expect_shape(const TensorView& tensor, const std::string& file, std::span<const int64_t> shape);

// A tensor to write: `data` must hold numel(shape) * dtype_size(dtype) bytes.
struct TensorToWrite {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a .safetensors file: tensors laid out in the given order, header padded with spaces to
// a multiple of 8 bytes (so every tensor starts 8-byte aligned). Goes through `<path>.tmp.<pid>`,
// fsync and rename, so a crash leaves the old file or the new one. A size that disagrees with
// the shape or a duplicate name is a caller bug (FP8RL_CHECK); I/O failures throw RuntimeFailure.
void write_file(const std::string& path, const std::vector<TensorToWrite>& tensors,
                const std::map<std::string, std::string>& metadata = {});

}  // namespace fp8rl::safetensors
