#include "core/recipe/run_dir.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/util/error.h"

namespace fs = std::filesystem;

namespace fp8rl::recipe {

fs::path run_dir_path(const LoadedRecipe& loaded) {
  const TrainerConfig& t = loaded.recipe.trainer;
  std::string name = t.experiment_name;
  if (name.empty()) name = loaded.path.empty() ? std::string("run") : fs::path(loaded.path).stem().string();
  return fs::path(t.output_dir) / name;
}

fs::path open_run_dir(const LoadedRecipe& loaded) {
  const fs::path dir = run_dir_path(loaded);
  std::error_code ec;
  // Finished work: a checkpoint, or a metrics line. An empty metrics.jsonl (and an empty
  // checkpoints directory) is what a run that failed during setup (a bad validation file, a
  // reward command that does not start) leaves; rerunning the corrected recipe must not need
  // --resume for that.
  const bool has_checkpoints = fs::is_directory(dir / kCheckpointsDir, ec) &&
                               fs::directory_iterator(dir / kCheckpointsDir, ec) != fs::directory_iterator();
  const bool has_metrics = fs::exists(dir / kMetricsFile, ec) && fs::file_size(dir / kMetricsFile, ec) > 0 && !ec;
  const bool has_work = has_checkpoints || has_metrics;
  if (has_work && loaded.recipe.checkpoint.resume_mode == "disable")
    throw ConfigError(fmt::format(
        "{}: run directory {} already holds a run (checkpoints or metrics); continue it with --resume auto, or choose another "
        "trainer.experiment_name",
        loaded.where("checkpoint.resume_mode"), dir.string()));
  // A bad path (a file in the way, no permission) is the user's to fix: a config error naming
  // the key that set it.
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec))
    throw ConfigError(fmt::format("{}: cannot create run directory {}: {}", loaded.where("trainer.output_dir"),
                                  dir.string(), ec ? ec.message() : std::string("not a directory")));
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw ConfigError(fmt::format("{}: run directory {} is not writable: {}", loaded.where("trainer.output_dir"),
                                  dir.string(), std::strerror(errno)));
  return dir;
}

}  // namespace fp8rl::recipe
