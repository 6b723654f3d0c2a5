// all_reduce and all_to_all_v over the MPI communicator for messages from 4 KB to 64 MB, printed
// in nccl-tests' format (size, count, type, time, algorithm and bus bandwidth). Run it under
// mpirun, e.g. `mpirun --allow-run-as-root --oversubscribe -np 2 build/bench/comm_bench`.
// (The NCCL counterpart is build/tests/nccl_test --bench, on a GPU machine.)
#include <cstdio>
#include <string>

#include "common/timer.h"
#include "parallel/mpi_communicator.h"

int main(int argc, char** argv) {
  moa::parallel::MpiRuntime mpi(&argc, &argv);
  auto world = moa::parallel::MakeWorldCommunicator();
  const int n = world->size();
  torch::set_num_threads(1);
  if (world->rank() == 0) {
    std::printf("# %d ranks, backend %s\n", n, world->backend_name().c_str());
    std::printf("# %10s %12s %6s %12s %8s %8s   %s\n", "size(B)", "count", "type", "time(us)",
                "algbw", "busbw", "collective");
  }
  for (const std::string op : {"all_reduce", "all_to_all_v"}) {
    for (int64_t bytes = 4096; bytes <= (int64_t{64} << 20); bytes *= 4) {
      const int64_t count = bytes / 4;
      torch::Tensor buffer = torch::ones({count});
      const int64_t rows = std::max<int64_t>(n, count / 64) / n * n;
      torch::Tensor table = torch::ones({rows, count / rows});
      std::vector<int64_t> split(n, rows / n);
      auto run = [&] {
        absl::Status status;
        if (op == "all_reduce") {
          status = world->AllReduce(buffer, moa::parallel::ReduceOp::kSum);
        } else {
          status = world->AllToAllV(table, split, nullptr).status();
        }
        if (!status.ok()) moa::parallel::AbortJob(std::string(status.message()));
      };
      for (int i = 0; i < 3; ++i) run();
      const int iters = bytes >= (int64_t{16} << 20) ? 5 : 20;
      world->Barrier().IgnoreError();
      moa::Stopwatch clock;
      for (int i = 0; i < iters; ++i) run();
      const double us = clock.Seconds() / iters * 1e6;
      const double algbw = static_cast<double>(bytes) / us / 1e3;
      const double factor = op == "all_reduce" ? 2.0 * (n - 1) / n : static_cast<double>(n - 1) / n;
      if (world->rank() == 0) {
        std::printf("  %10lld %12lld %6s %12.1f %8.2f %8.2f   %s\n", static_cast<long long>(bytes),
                    static_cast<long long>(count), "float", us, algbw, algbw * factor, op.c_str());
      }
    }
  }
  return 0;
}
