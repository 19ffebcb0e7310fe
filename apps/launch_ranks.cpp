#include "apps/launch_ranks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl {

namespace {

std::vector<pid_t> g_children;  // written before the handlers are installed, read by them
std::atomic<int> g_forwarded{0};

void forward_signal(int sig) {
  g_forwarded.fetch_add(1);
  for (const pid_t p : g_children) ::kill(p, sig);
}

// A TCP port on 127.0.0.1 that is free now (the kernel picks it); rank 0 binds it moments later.
int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw RuntimeFailure(std::string("launcher: socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) throw RuntimeFailure(std::string("launcher: cannot find a free port on 127.0.0.1: ") + std::strerror(err));
  return ntohs(a.sin_port);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitRuntime;
}

std::string how_it_ended(int status) {
  if (WIFSIGNALED(status)) return cat("was killed by signal ", WTERMSIG(status), " (", ::strsignal(WTERMSIG(status)), ")");
  return cat("exited with code ", exit_code_of(status));
}

}  // namespace

int launch_local_ranks(int n, const std::vector<std::string>& argv) {
  const int port = free_local_port();
  std::cout.flush();
  std::cerr.flush();
  pid_t group = 0;  // the ranks' process group: the first rank's pid
  for (int rank = 0; rank < n; ++rank) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      for (const pid_t p : g_children) ::kill(p, SIGKILL);
      throw RuntimeFailure(std::string("launcher: fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
      ::setpgid(0, group);
      const std::string r = std::to_string(rank), w = std::to_string(n), p = std::to_string(port);
      ::setenv("RANK", r.c_str(), 1);
      ::setenv("LOCAL_RANK", r.c_str(), 1);
      ::setenv("WORLD_SIZE", w.c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", w.c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", p.c_str(), 1);
      ::unsetenv("TORCHELASTIC_USE_AGENT_STORE");
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv("/proc/self/exe", args.data());
      std::cerr << "fp8rl: error: launcher: cannot start rank " << rank << ": " << std::strerror(errno) << "\n";
      ::_exit(kExitRuntime);
    }
    if (group == 0) group = pid;
    ::setpgid(pid, group);  // also here, so the group exists before the parent signals it
    g_children.push_back(pid);
  }
  log::info(cat("launched ", n, " ranks (rendezvous 127.0.0.1:", port, ")"));
  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  int code = kExitOk;
  int running = n;
  bool stopping = false;
  std::vector<int> status_of(static_cast<size_t>(n), 0);
  std::vector<int> exit_order;  // ranks in the order they ended
  // Reaps one rank (blocking or not); its index, or -1 when none was reaped.
  const auto reap = [&](bool block) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, block ? 0 : WNOHANG);
    if (pid <= 0) return -1;
    int rank = 0;
    while (rank < n && g_children[static_cast<size_t>(rank)] != pid) ++rank;
    if (rank == n) return -2;  // not a rank (cannot happen: the ranks are our only children)
    --running;
    exit_order.push_back(rank);
    status_of[static_cast<size_t>(rank)] = status;
    return rank;
  };
  while (running > 0) {
    const int first = reap(true);
    if (first == -2 || (first == -1 && errno == EINTR)) continue;
    if (first < 0) break;
    const int c = exit_code_of(status_of[static_cast<size_t>(first)]);
    if (c == kExitOk || stopping) continue;
    // An interrupt ends every rank with 130: that is the run stopping as asked, not a failure.
    if (c == 130 && g_forwarded.load() > 0) {
      code = c;
      continue;
    }
    // A failure makes other ranks stop too, with exit code 3 (PeerFailure: "another rank
    // failed"). Gather what ends within a moment, then blame the first rank that ended for a
    // reason of its own.
    for (int i = 0; i < 20 && running > 0; ++i) {
      if (reap(false) < 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    int culprit = first;
    for (const int r : exit_order) {
      const int rc = exit_code_of(status_of[static_cast<size_t>(r)]);
      if (rc != kExitOk && rc != kExitPeer) {
        culprit = r;
        break;
      }
    }
    const int status = status_of[static_cast<size_t>(culprit)];
    code = exit_code_of(status);
    std::cerr << "fp8rl: error: rank " << culprit << " " << how_it_ended(status);
    if (running > 0) std::cerr << "; stopping the other " << running << " rank" << (running == 1 ? "" : "s");
    std::cerr << "\n" << std::flush;
    stopping = true;
    if (running > 0) {
      // Twice: the first asks for a checkpoint after the step (which the ranks cannot finish
      // without the failed one), the second makes them exit at once. Then a deadline.
      ::kill(-group, SIGTERM);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      ::kill(-group, SIGTERM);
      std::thread([group] {
        std::this_thread::sleep_for(std::chrono::seconds(10));
        ::kill(-group, SIGKILL);
      }).detach();
    }
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  return code;
}

}  // namespace fp8rl
