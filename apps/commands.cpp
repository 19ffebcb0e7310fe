#include "apps/commands.h"

#include <iostream>

#include "core/error.h"
#include "core/log.h"
#include "core/recipe_load.h"
#include "core/recipe_validate.h"
#include "trainer/train.h"

namespace fp8rl {

int run_check(const CheckArgs& args) {
  if (args.list_keys) {
    std::cout << describe_keys();
    return kExitOk;
  }
  if (args.recipe.empty()) throw ConfigError("check: a recipe file is required (or --keys to list the schema)");
  LoadedRecipe loaded = load_recipe(args.recipe, args.overrides);
  const ModelShape shape = validate_recipe(loaded);
  std::cout << "# resolved recipe: " << args.recipe << "\n" << to_yaml(loaded, !args.plain) << std::flush;
  log::info(cat(args.recipe, " is valid (model ", shape.model_type, ", ", shape.num_hidden_layers, " layers)"));
  return kExitOk;
}

int run_train_command(const TrainArgs& args) {
  std::vector<std::string> overrides = args.overrides;
  // --resume is sugar for the checkpoint.* overrides, applied last.
  if (args.resume == "auto") {
    overrides.push_back("checkpoint.resume_mode=auto");
  } else if (!args.resume.empty()) {
    overrides.push_back("checkpoint.resume_mode=resume_path");
    overrides.push_back("checkpoint.resume_from_path=" + args.resume);
  }
  return run_train(load_recipe(args.recipe, overrides));
}

}  // namespace fp8rl
