// Data parallelism's gradient all-reduce (trainer/collective.h) between two gloo ranks in one
// process (two threads, a TCPStore on a free local port): gradients are summed, a rank without a
// gradient contributes zeros, and a parameter no rank has a gradient for keeps an undefined one,
// as in a single process (AdamW then skips it: no moment decay, no weight decay).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <chrono>
#include <exception>
#include <thread>
#include <vector>

#include "tests/catch.h"
#include "trainer/collective.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return 29517;
  const int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

}  // namespace

TEST_CASE("data parallel: gradients summed over ranks, and one no rank has stays undefined", "[trainer][collective]") {
  const int port = free_port();
  // Per rank: params a, b, c [3]. Rank 0 has a gradient for a; rank 1 for a and b; none for c.
  std::vector<std::vector<at::Tensor>> params(2);
  std::exception_ptr failure[2];
  auto rank_main = [&](int rank) {
    try {
      WorldEnv env;
      env.rank = rank;
      env.world_size = 2;
      env.master_addr = "127.0.0.1";
      env.master_port = port;
      Collective comm(env, at::kCPU, std::chrono::milliseconds(60000));
      std::vector<at::Tensor>& p = params[static_cast<size_t>(rank)];
      for (int i = 0; i < 3; ++i) p.push_back(at::zeros({3}).set_requires_grad(true));
      p[0].mutable_grad() = at::full({3}, 1.0 + rank);
      if (rank == 1) p[1].mutable_grad() = at::full({3}, 5.0);
      comm.all_reduce_grads(p);
    } catch (...) {
      failure[rank] = std::current_exception();
    }
  };
  std::thread r0(rank_main, 0), r1(rank_main, 1);
  r0.join();
  r1.join();
  for (const std::exception_ptr& f : failure)
    if (f) std::rethrow_exception(f);
  for (int rank = 0; rank < 2; ++rank) {
    INFO("rank " << rank);
    const std::vector<at::Tensor>& p = params[static_cast<size_t>(rank)];
    CHECK(at::equal(p[0].grad(), at::full({3}, 3.0)));
    CHECK(at::equal(p[1].grad(), at::full({3}, 5.0)));
    CHECK_FALSE(p[2].grad().defined());
  }
}
