// The checkpoint directories of a run, crash-safe and checksummed.
//
//   run_dir/checkpoints/step_00000010/   the trainer's files (any names, subdirectories too)
//                       step_00000010/manifest.json
//                         {"step": 10, "files": {"<name>": {"bytes": n, "crc32c": "<8 hex>"}}, "complete": true}
//                       .tmp-step_00000020.<pid>/   a checkpoint being written (never listed)
//
// Why a kill -9 (or a power cut) at any moment never damages the last complete checkpoint:
//   1. the trainer writes into a staging directory whose name no reader accepts (.tmp-...);
//   2. commit fsyncs every file, writes manifest.json last (itself atomically) and fsyncs the
//      directories, so a directory with a manifest holds all its bytes on disk;
//   3. one rename() publishes it as step_XXXXXXXX, atomic in POSIX: before it there is no new
//      checkpoint, after it a complete one; checkpoints/ is fsynced so the rename survives;
//   4. only then are older checkpoints pruned, each first renamed away (.del-...) so that a
//      half-deleted one is never listed.
// A crash leaves at worst a .tmp-/.del- directory, removed by a later commit once its pid is
// dead. Re-committing an existing step swaps old and new with renameat2(RENAME_EXCHANGE),
// atomic too; only on a filesystem without it (rare: some network filesystems) is there a
// window between two renames where that one step is absent (older steps are still there).
//
// The manifest's sizes and CRC-32Cs let resume refuse a checkpoint that a disk, a copy or a
// person damaged, with the name of the file, instead of training from corrupted weights.
// Host-only (no ATen): the trainer decides what the files are.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace fp8rl::trainer {

inline constexpr const char* kManifestFile = "manifest.json";

// "step_00000010".
std::string checkpoint_dir_name(int64_t step);

class CheckpointStore {
 public:
  // max_keep: complete checkpoints kept after a commit (checkpoint.max_ckpt_to_keep); 0 = all.
  CheckpointStore(std::filesystem::path run_dir, int64_t max_keep);

  // A fresh, empty staging directory checkpoints/.tmp-step_XXXXXXXX.<pid> for the caller to
  // write the checkpoint's files into (one left by an earlier attempt of this process is
  // removed). Throws RuntimeFailure when it cannot be created.
  std::filesystem::path begin(int64_t step) const;

  // Publishes `staging` (from begin(step)) as checkpoints/step_XXXXXXXX: checksums and fsyncs
  // every regular file in it (names relative, '/'-separated), writes manifest.json, renames,
  // then prunes complete checkpoints beyond max_keep oldest first (never the one just
  // committed) and removes .tmp-/.del- directories of dead processes. Returns the final path.
  // Throws RuntimeFailure naming the path on any I/O failure, leaving earlier checkpoints as
  // they were. Precondition: staging holds no manifest.json and only regular files and dirs.
  std::filesystem::path commit(const std::filesystem::path& staging, int64_t step) const;

  // Complete checkpoints (step_* directories with a manifest), oldest first by step. Checksums
  // are not read: this is the cheap listing.
  std::vector<std::filesystem::path> list() const;

  // For checkpoint.resume_mode auto: the newest checkpoint that verify_checkpoint() accepts.
  // Each newer one it passes over (damaged, or a step_* directory without manifest) is added
  // to `skipped` as the reason, starting with its path, for the caller to log. nullopt: none.
  std::optional<std::filesystem::path> latest_good(std::vector<std::string>* skipped = nullptr) const;

  // Resuming at `step` starts the run's history again from there: the checkpoints of later steps
  // (complete or not) belong to a branch it abandoned, e.g. after checkpoint.resume_path to an
  // older step of the same run. Left in place, `resume auto` would go back to them and pruning
  // would keep them over the new ones. They are moved, never deleted, into
  // checkpoints/superseded_after_step_XXXXXXXX.<unix seconds>/ (which no listing reads), and that
  // directory is returned; an empty path when there was nothing later. RuntimeFailure on I/O errors.
  std::filesystem::path set_aside_after(int64_t step) const;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;  // run_dir/checkpoints
  int64_t max_keep_;
};

// Checks manifest.json and every file it lists (size, then CRC-32C) and returns the step.
// Throws ConfigError "<dir>: <what is wrong>; expected a complete fp8rl checkpoint (...)" naming
// the first file that does not match; a missing path, a regular file, a directory without a
// manifest and a staging directory are refused the same way.
int64_t verify_checkpoint(const std::filesystem::path& dir);

}  // namespace fp8rl::trainer
