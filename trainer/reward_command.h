// An external reward program (reward.type: command, reward.command): one long-lived child
// process, so a scorer that loads something heavy (a judge model, a test harness) pays for it once.
//
// Started as `/bin/sh -c COMMAND` in its own process group (a timeout kills everything it started;
// a Ctrl-C at the terminal reaches fp8rl, whose exit closes the command's stdin), stdin and
// stdout are pipes, stderr is fp8rl's. The protocol is JSONL, one line per sample, in batch order:
//
//   fp8rl -> command   {"prompt": "...", "response": "...", "answer": "...", "index": 0}
//   command -> fp8rl   {"reward": 1.0}              (or {"index": 0, "reward": 1.0}, any order)
//
// Answers are read while the batch is written, so a scorer may answer each line as it comes or
// read the whole batch first; it must flush each answer (python: print(..., flush=True)), or the
// answer sits in its buffer until the timeout. Invalid UTF-8 in a response is sent as U+FFFD.
// Blank answer lines are skipped.
//
// Every failure is a RuntimeFailure naming the command: it exited or was killed (with its exit
// status or signal), it did not answer the whole batch within timeout_seconds (it is then killed),
// or it answered a line that is not {"reward": <finite number>} (the line is quoted, cut to 200
// bytes). After a failure the object is dead: later score() calls repeat the error. fp8rl never
// dies of SIGPIPE here: a write to a command that has gone is reported as its exit.
#pragma once

#include <string>
#include <vector>

#include "trainer/rewards.h"

namespace fp8rl::trainer {

class RewardCommand {
 public:
  // Starts the command now (RuntimeFailure if it cannot be spawned). A command that is not found
  // shows up in expect_running() or at the first score() as "exited with status 127".
  // timeout_seconds > 0, per batch.
  explicit RewardCommand(std::string command, double timeout_seconds = 60);
  // Closes the command's stdin (its signal to finish), waits up to kExitGraceSeconds, then kills
  // its process group; always reaps it, so no zombie is left.
  ~RewardCommand();
  RewardCommand(const RewardCommand&) = delete;
  RewardCommand& operator=(const RewardCommand&) = delete;

  // Waits up to `wait_seconds` for the command to die at once, as a mistyped or missing program
  // does (sh exits 127 within milliseconds): then a ConfigError naming reward.command and its exit
  // status, and the object is dead. Returns as soon as the wait is over with the command running.
  // Called once at startup, so a typo fails before the first rollout, not after it.
  void expect_running(double wait_seconds);

  // One reward per sample, in batch order. Not thread-safe (one batch at a time).
  std::vector<double> score(const std::vector<RewardInput>& batch);

  const std::string& command() const { return command_; }
  int pid() const { return pid_; }  // the child's pid while it is not reaped, else -1 (for tests)

  static constexpr double kExitGraceSeconds = 1.0;

 private:
  // Kills and reaps the child, remembers `what`, throws it (a ConfigError where the recipe's
  // command is at fault, else a RuntimeFailure; later calls repeat it as a RuntimeFailure).
  [[noreturn]] void fail(const std::string& what, bool config_error = false);
  // Waits up to `wait_seconds` for the child to end: "exited with status 3", "was killed by
  // signal 9 (Killed)", or `if_running` when it is still alive (it is not reaped here).
  std::string describe_exit(double wait_seconds, const char* if_running);
  void kill_and_reap();

  std::string command_;
  double timeout_seconds_;
  int pid_ = -1;
  int to_child_ = -1;    // the command's stdin
  int from_child_ = -1;  // the command's stdout
  std::string pending_;  // bytes read after the last complete line
  std::string failed_;   // the error that ended the command; empty while it is usable
  int64_t batches_ = 0;  // batches scored so far (for "before its first batch" in errors)
};

}  // namespace fp8rl::trainer
