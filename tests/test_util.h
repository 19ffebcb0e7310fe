// Helpers shared by tests: a temporary directory that cleans up after itself, file writing,
// and "this throws ConfigError whose message contains ...".
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "tests/catch.h"

namespace fp8rl::test {

// The whole file, bytes as they are ("" if it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("fp8rl-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  // Writes `content` to path()/name and returns the full path.
  std::string write(const std::string& name, const std::string& content) const {
    auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << content;
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

}  // namespace fp8rl::test

// Checks that `expr` throws `type` and that its what() contains `needle`.
#define REQUIRE_THROWS_CONTAINING(expr, type, needle)                                   \
  do {                                                                                  \
    bool fp8rl_thrown = false;                                                          \
    try {                                                                               \
      (void)(expr);                                                                     \
    } catch (const type& e) {                                                           \
      fp8rl_thrown = true;                                                              \
      INFO("message: " << e.what());                                                    \
      CHECK(std::string(e.what()).find(needle) != std::string::npos);                   \
    }                                                                                   \
    if (!fp8rl_thrown) FAIL("expected " #type " containing \"" << needle << "\"");      \
  } while (0)
