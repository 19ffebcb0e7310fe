#include "trainer/reward_command.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/log.h"

extern char** environ;

namespace fp8rl::trainer {

namespace {

constexpr size_t kMaxQuoted = 200;          // bytes of an offending line or command in a message
constexpr size_t kMaxAnswerLine = 1 << 20;  // an answer line is a few bytes; this is a runaway

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// `s` cut to kMaxQuoted bytes, never inside a UTF-8 sequence. error.h's one_line() escapes
// control characters when the message is made.
std::string quote_cut(std::string_view s) {
  if (s.size() <= kMaxQuoted) return cat("'", s, "'");
  size_t n = kMaxQuoted;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return cat("'", s.substr(0, n), "...' (", s.size(), " bytes)");
}

bool blank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

// Blocks SIGPIPE in this thread while it lives, so a write to a command that has exited fails
// with EPIPE instead of killing fp8rl (pipes have no MSG_NOSIGNAL). A SIGPIPE our writes raised
// is consumed before the old mask comes back; one that was already pending is left alone.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeBlock() {
    if (!was_pending_) {
      const timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {}
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t pipe_{}, old_{};
  bool was_pending_ = false;
};

}  // namespace

RewardCommand::RewardCommand(std::string command, double timeout_seconds)
    : command_(std::move(command)), timeout_seconds_(timeout_seconds) {
  if (command_.empty()) throw ConfigError("reward.command is empty; expected a program that speaks JSONL");
  FP8RL_CHECK(std::isfinite(timeout_seconds) && timeout_seconds > 0, cat("timeout_seconds = ", timeout_seconds));
  int in[2], out[2];  // [read end, write end]
  if (pipe2(in, O_CLOEXEC) != 0) throw RuntimeFailure(cat("reward command: pipe: ", std::strerror(errno)));
  if (pipe2(out, O_CLOEXEC) != 0) {
    const int e = errno;
    close(in[0]), close(in[1]);
    throw RuntimeFailure(cat("reward command: pipe: ", std::strerror(e)));
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);  // dup2 drops O_CLOEXEC on 0 and 1
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so a timeout kills what the shell started too. SIGPIPE back to the
  // default (an ignored signal survives exec) and no signals blocked: the command starts clean.
  sigset_t def, none;
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  sigemptyset(&none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigdefault(&attr, &def);
  posix_spawnattr_setsigmask(&attr, &none);
  char* argv[] = {const_cast<char*>("sh"), const_cast<char*>("-c"), command_.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(in[0]), close(out[1]);
  if (rc != 0) {
    close(in[1]), close(out[0]);
    throw RuntimeFailure(cat("reward command ", quote_cut(command_), " cannot start (/bin/sh -c): ", std::strerror(rc)));
  }
  pid_ = pid;
  to_child_ = in[1];
  from_child_ = out[0];
  fcntl(to_child_, F_SETFL, fcntl(to_child_, F_GETFL) | O_NONBLOCK);
  fcntl(from_child_, F_SETFL, fcntl(from_child_, F_GETFL) | O_NONBLOCK);
}

RewardCommand::~RewardCommand() {
  if (pid_ > 0) {
    close(to_child_);  // EOF on its stdin: a well-behaved command finishes now
    to_child_ = -1;
    describe_exit(kExitGraceSeconds, "");
  }
  kill_and_reap();
}

void RewardCommand::kill_and_reap() {
  if (pid_ > 0) {
    kill(-pid_, SIGKILL);  // the group; pid_ is not reaped yet, so its id cannot have been reused
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    pid_ = -1;
  }
  for (int* fd : {&to_child_, &from_child_})
    if (*fd >= 0) close(*fd), *fd = -1;
}

std::string RewardCommand::describe_exit(double wait_seconds, const char* if_running) {
  const double until = now_seconds() + wait_seconds;
  for (;;) {
    siginfo_t info{};
    // WNOWAIT: the child stays a zombie, so kill_and_reap can still signal its group safely.
    const int rc = waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return "exited (its status is unknown)";  // ECHILD: SIGCHLD ignored, reaped already
    if (info.si_pid == pid_) {
      if (info.si_code == CLD_EXITED) {
        const int s = info.si_status;
        // 126/127: sh could not run the program; 128+N: what it ran died of signal N (sh's convention).
        const std::string hint = s == 127 ? " (command not found?)" : s == 126 ? " (not executable?)"
                                 : s > 128 && s < 128 + NSIG ? cat(" (128 + signal ", s - 128, ": ", strsignal(s - 128), ")")
                                                             : std::string();
        return cat("exited with status ", s, hint);
      }
      return cat("was killed by signal ", info.si_status, " (", strsignal(info.si_status), ")");
    }
    if (now_seconds() >= until) return if_running;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void RewardCommand::fail(const std::string& what, bool config_error) {
  failed_ = what;
  kill_and_reap();
  if (config_error) throw ConfigError(what);
  throw RuntimeFailure(what);
}

void RewardCommand::expect_running(double wait_seconds) {
  if (!failed_.empty()) throw RuntimeFailure(failed_);
  const std::string exit = describe_exit(wait_seconds, "");
  if (exit.empty()) return;
  fail(cat("reward.command: ", quote_cut(command_), " ", exit,
           " right after it started; it must keep running and answer one JSONL line per sample"),
       /*config_error=*/true);
}

std::vector<double> RewardCommand::score(const std::vector<RewardInput>& batch) {
  if (!failed_.empty()) throw RuntimeFailure(failed_);
  const std::string name = cat("reward command ", quote_cut(command_));
  const size_t n = batch.size();

  // Whatever it printed since the last batch: more answers than samples, or its exit.
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = read(from_child_, buf, sizeof(buf));
    if (r > 0) pending_.append(buf, static_cast<size_t>(r));
    if (r == 0)
      fail(cat(name, " ", describe_exit(kExitGraceSeconds, "closed its stdout"),
               batches_ == 0 ? " before its first batch" : " between batches"));
    if ((r < 0 && errno != EINTR) || pending_.size() > kMaxAnswerLine) break;  // EAGAIN: nothing more
  }
  if (!blank(pending_))
    fail(cat(name, " answered more lines than samples in the previous batch: ", quote_cut(pending_)));
  pending_.clear();
  if (n == 0) return {};

  std::string input;
  for (size_t i = 0; i < n; ++i) {
    const nlohmann::ordered_json j{{"prompt", std::string(batch[i].prompt)},
                                   {"response", std::string(batch[i].response)},
                                   {"answer", std::string(batch[i].answer)},
                                   {"index", i}};
    input += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // bad UTF-8 -> U+FFFD
    input += '\n';
  }

  std::vector<double> rewards(n, 0.0);
  std::vector<char> seen(n, 0);
  size_t answered = 0, written = 0;
  auto died = [&](const char* if_running) {
    fail(cat(name, " ", describe_exit(kExitGraceSeconds, if_running), " (it answered ", answered, " of ", n,
             " samples of this batch)"));
  };
  auto garbage = [&](std::string_view why, std::string_view line) {
    fail(cat(name, " answered a line that is not {\"reward\": <finite number>} (", why, "): ", quote_cut(line)));
  };
  auto take_line = [&](std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (blank(line)) return;
    if (answered == n) garbage("more answers than samples", line);
    const auto j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) garbage("not valid JSON", line);  // also a number out of double's range
    if (!j.is_object()) garbage("not a JSON object", line);
    const auto r = j.find("reward");
    if (r == j.end() || !r->is_number()) garbage("no numeric \"reward\"", line);
    const double v = r->get<double>();
    if (!std::isfinite(v)) garbage("the reward is not finite", line);
    size_t slot = answered;  // in order, unless it says which sample
    if (const auto ix = j.find("index"); ix != j.end()) {
      if (!ix->is_number_integer() || ix->get<int64_t>() < 0 || ix->get<int64_t>() >= static_cast<int64_t>(n))
        garbage(cat("\"index\" is not an integer in [0, ", n, ")"), line);
      slot = static_cast<size_t>(ix->get<int64_t>());
    }
    if (slot >= n || seen[slot]) garbage(cat("a second answer for sample ", slot), line);
    seen[slot] = 1;
    rewards[slot] = v;
    ++answered;
  };

  SigpipeBlock no_sigpipe;
  const double deadline = now_seconds() + timeout_seconds_;
  while (answered < n || written < input.size()) {
    const double left = deadline - now_seconds();
    if (left <= 0)
      fail(cat(name, " did not answer ", n, " samples within ", timeout_seconds_, " s (it answered ", answered,
               "); it was killed (reward.timeout_s sets the limit)"));
    pollfd fds[2] = {{from_child_, POLLIN, 0}, {to_child_, POLLOUT, 0}};
    const nfds_t nfds = written < input.size() ? 2 : 1;
    if (poll(fds, nfds, static_cast<int>(std::ceil(std::min(left, 3600.0) * 1000))) < 0) {
      if (errno == EINTR) continue;
      throw RuntimeFailure(cat(name, ": poll: ", std::strerror(errno)));
    }
    if (nfds == 2 && fds[1].revents != 0) {
      const ssize_t w = write(to_child_, input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      else if (w < 0 && errno == EPIPE) died("closed its stdin");  // most likely it has exited
      else if (w < 0 && errno != EAGAIN && errno != EINTR)
        throw RuntimeFailure(cat(name, ": write: ", std::strerror(errno)));
    }
    if (fds[0].revents != 0) {
      const ssize_t r = read(from_child_, buf, sizeof(buf));
      if (r == 0) died("closed its stdout");
      if (r < 0 && errno != EAGAIN && errno != EINTR) throw RuntimeFailure(cat(name, ": read: ", std::strerror(errno)));
      if (r > 0) pending_.append(buf, static_cast<size_t>(r));
      size_t start = 0;
      for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1)
        take_line(std::string_view(pending_).substr(start, nl - start));
      pending_.erase(0, start);
      if (pending_.size() > kMaxAnswerLine) garbage("a line longer than 1 MiB", pending_);
    }
  }
  ++batches_;
  return rewards;
}

}  // namespace fp8rl::trainer
