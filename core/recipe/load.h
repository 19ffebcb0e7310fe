// Loading a recipe: YAML files, `base:` extension, dotted command-line overrides, and the
// resolved config printed back as YAML.
//
//   # recipes/qwen3-8b-dapo-bf16.yaml
//   base: qwen3-8b-dapo-fp8.yaml     # relative to this file; chains are allowed, cycles are not
//   quantization:
//     quant_method: none
//
// Later layers win key by key: base file(s), then the recipe, then the overrides
// (`trainer.lr=1e-6`, values parsed as YAML so `quantization.weight_block_size=[128,128]` works).
// Every key remembers where its value came from, so errors can name the file and line.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/recipe/recipe.h"

namespace fp8rl::recipe {

// Where a value was set: a file and 1-based line, or a command-line override; all empty for
// a default.
struct Source {
  std::string file;
  int line = 0;
  std::string override_arg;      // "trainer.lr=1e-6" when set on the command line
  std::string describe() const;  // "r.yaml:12", "command line 'trainer.lr=1e-6'", "default"
};

struct LoadedRecipe {
  Recipe recipe;
  std::string path;                       // the recipe given by the user
  std::vector<std::string> files;         // every file read, base first
  std::map<std::string, Source> sources;  // dotted key -> where it was set (absent = default)

  // "r.yaml:12: rollout.n" style prefix for messages about `key`.
  std::string where(const std::string& key) const;
};

// Throws ConfigError naming the file and line (or the override) on: unreadable files, YAML
// syntax errors, base cycles, unknown sections/keys (with a "did you mean"), wrong types and
// values outside an enumerated key's choices. Range and cross-field rules are in
// core/recipe/validate.h.
LoadedRecipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});

// Only overrides on top of the defaults (tests, and `fp8rl check --keys`).
LoadedRecipe load_defaults(const std::vector<std::string>& overrides = {});

// The resolved recipe as YAML. With `annotate`, each non-default value carries a comment
// saying where it was set.
std::string to_yaml(const LoadedRecipe& loaded, bool annotate);

// Every key ("section.key") with its value as to_yaml writes it ("fp8", "[128, 128]", "1.0e-06").
std::map<std::string, std::string> key_values(const Recipe& recipe);

// Every key with its type, default and doc, one per line (`fp8rl check --keys`).
std::string describe_keys();

// All dotted keys of the schema, in schema order.
std::vector<std::string> all_keys();

}  // namespace fp8rl::recipe
