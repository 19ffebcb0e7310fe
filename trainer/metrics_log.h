// The per-step metrics of a run: run_dir/metrics.jsonl, TensorBoard event files, and the
// one-line terminal progress.
//
// metrics.jsonl is the run's record that tools read (plots, golden-curve comparisons), one
// JSON object per step: {"step": 12, "reward/mean": 0.41, ...}. It must read the same whether
// or not the run was interrupted: a resumed run first drops the lines of steps after its
// checkpoint (they are recomputed) and a torn last line from a crash, then appends. Each
// step's line is flushed to disk (fdatasync) before log() returns, so a crash loses at most
// the step being written.
//
// TensorBoard files are written without TensorFlow or protobuf: TFRecord framing around a
// hand-encoded Event message (the handful of fields a scalar needs). Every run segment opens a
// new event file that starts with a SessionLog START (at step 0, or resume_step + 1 when
// resuming): TensorBoard takes a START after the first one as a restart and discards the older
// files' points from that step on ("purge orphaned data"), so the curves show resumed steps
// once. (Its Rust loader gets there without: a step that goes back replaces what follows.)
//
// logging.logger "console" is accepted here but printed by the caller: the progress line
// needs values this class does not have (tokens/s, time per step), see progress_line().
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace fp8rl::trainer {

// TensorBoard event files go to run_dir/kTensorBoardDir (point `tensorboard --logdir` at it).
inline constexpr const char* kTensorBoardDir = "tensorboard";

class MetricsLog {
 public:
  // `loggers` is logging.logger, a subset of {"console", "jsonl", "tensorboard"} (ConfigError
  // on anything else). resume_step >= 0: a resumed run; metrics.jsonl (if present, whatever
  // the loggers) is rewritten atomically keeping only complete lines with step <= resume_step.
  // resume_step < 0: a fresh run; with the jsonl logger an existing metrics.jsonl (resume auto
  // found no checkpoint: open_run_dir refuses one under resume disable) is emptied, since its
  // steps are trained again.
  // Throws RuntimeFailure naming the file when a file cannot be opened or rewritten.
  MetricsLog(const std::filesystem::path& run_dir, std::vector<std::string> loggers, int64_t resume_step = -1);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // One step: a metrics.jsonl line with the values in the given order (non-finite values as
  // null) and one TensorBoard scalar per value (tag = name, e.g. "rollout_corr/kl"), both on
  // disk when this returns. Names are unique and not "step" (FP8RL_CHECK). Throws
  // RuntimeFailure naming the file when a write fails (disk full).
  void log(int64_t step, const std::vector<std::pair<std::string, double>>& metrics);
  // fdatasync of both files (log() already does it; for callers that want it at exit).
  void flush();

  // The event file of this run segment ("" without the tensorboard logger).
  const std::filesystem::path& event_file() const { return event_path_; }

 private:
  std::filesystem::path jsonl_path_, event_path_;
  int jsonl_fd_ = -1, event_fd_ = -1;
};

// What the progress line shows; a NaN field (or total_steps <= 0) is left out of the line.
struct Progress {
  static constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
  int64_t step = 0;                 // steps finished
  int64_t total_steps = 0;          // of the run; <= 0 = unknown (no "/total", no ETA)
  double reward = kNone;            // mean reward of the step's rollouts
  double accuracy = kNone;          // fraction of rollouts the verifier accepted
  double response_length = kNone;   // mean response tokens
  double tokens_per_s = kNone;      // tokens processed (generated + trained) per second
  double seconds_per_step = kNone;  // wall time per step (the ETA assumes it stays so)
};

// "step 12/100 | reward 0.41 | acc 0.38 | resp_len 9.2 | 1234 tok/s | 3.1 s/step | ETA 4m32s".
// Numbers are compact (3 significant digits, whole numbers from 100 up); the ETA is
// (total_steps - step) * seconds_per_step as 45s, 4m32s or 1h02m03s.
std::string progress_line(const Progress& p);

}  // namespace fp8rl::trainer
