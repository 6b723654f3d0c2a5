// Standalone NCCL test and benchmark for a GPU machine: one thread per visible GPU (up to
// --ranks), each a rank of one NCCL group bootstrapped in process, runs the collective
// expectations (closed form in rank and size, uneven all_to_all_v tables included); with --bench
// it prints all_reduce and all_to_all_v bandwidth in nccl-tests' format. Without a CUDA device it
// prints why and exits 77 (ctest's skip code).
//
// usage: nccl_test [--ranks N] [--bench]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "parallel/nccl_communicator.h"

using moa::parallel::DataType;
using moa::parallel::NcclCommunicator;
using moa::parallel::ReduceOp;

namespace {

std::atomic<int> g_passed{0}, g_failed{0};
std::mutex g_print;

void Expect(bool ok, int rank, const std::string& what) {
  if (ok) {
    ++g_passed;
    return;
  }
  ++g_failed;
  std::lock_guard<std::mutex> lock(g_print);
  std::printf("FAILED on rank %d: %s\n", rank, what.c_str());
}

// In-process bootstrap: rank 0's bytes reach every thread.
class SharedBroadcast {
 public:
  explicit SharedBroadcast(int size) : size_(size) {}
  absl::Status Broadcast(void* data, size_t bytes, int root, int rank) {
    std::unique_lock<std::mutex> lock(mutex_);
    const int generation = generation_;
    if (rank == root) {
      buffer_.assign(static_cast<char*>(data), static_cast<char*>(data) + bytes);
      ready_ = true;
      changed_.notify_all();
    } else {
      changed_.wait(lock, [&] { return ready_ && generation_ == generation; });
      std::memcpy(data, buffer_.data(), bytes);
    }
    if (++arrived_ == size_) {
      arrived_ = 0;
      ready_ = false;
      ++generation_;
      changed_.notify_all();
    } else {
      changed_.wait(lock, [&] { return generation_ != generation; });
    }
    return absl::OkStatus();
  }

 private:
  int size_;
  std::vector<char> buffer_;
  bool ready_ = false;
  int arrived_ = 0;
  int generation_ = 0;
  std::mutex mutex_;
  std::condition_variable changed_;
};

template <typename T>
std::vector<T> Download(const void* device, size_t count) {
  std::vector<T> host(count);
  if (count > 0) cudaMemcpy(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost);
  return host;
}

template <typename T>
void* Upload(const std::vector<T>& host) {
  void* device = nullptr;
  cudaMalloc(&device, std::max<size_t>(1, host.size()) * sizeof(T));
  if (!host.empty())
    cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  // A copy from pageable memory may return before the data has landed, and the communicator's
  // stream does not wait for the default one.
  cudaDeviceSynchronize();
  return device;
}

void Conformance(NcclCommunicator& c) {
  const int r = c.rank(), n = c.size();
  {  // all_reduce sum, average, max
    void* buf = Upload(std::vector<float>{1.0f * (r + 1), 2.0f * (r + 1), 3.0f * (r + 1)});
    Expect(c.AllReduce(buf, 3, DataType::kFloat32, ReduceOp::kSum).ok(), r, "all_reduce call");
    const auto got = Download<float>(buf, 3);
    const float s = n * (n + 1) / 2.0f;
    Expect(got[0] == s && got[1] == 2 * s && got[2] == 3 * s, r, "all_reduce sum values");
    cudaFree(buf);
    void* avg = Upload(std::vector<double>(1000, static_cast<double>(r)));
    Expect(c.AllReduce(avg, 1000, DataType::kFloat64, ReduceOp::kAverage).ok(), r,
           "all_reduce avg call");
    const auto a = Download<double>(avg, 1000);
    Expect(std::all_of(a.begin(), a.end(),
                       [n](double v) { return std::abs(v - (n - 1) / 2.0) < 1e-12; }),
           r, "all_reduce average values");
    cudaFree(avg);
    void* mx = Upload(std::vector<int64_t>{r, -r});
    Expect(c.AllReduce(mx, 2, DataType::kInt64, ReduceOp::kMax).ok(), r, "all_reduce max call");
    const auto m = Download<int64_t>(mx, 2);
    Expect(m[0] == n - 1 && m[1] == 0, r, "all_reduce max values");
    cudaFree(mx);
  }
  {  // all_gather and broadcast from every root
    void* send = Upload(std::vector<float>(6, static_cast<float>(r)));
    void* recv = Upload(std::vector<float>(6 * n, -1.0f));
    Expect(c.AllGather(send, recv, 6, DataType::kFloat32).ok(), r, "all_gather call");
    const auto g = Download<float>(recv, 6 * n);
    bool ok = true;
    for (int j = 0; j < n; ++j) {
      for (int k = 0; k < 6; ++k) ok &= g[j * 6 + k] == static_cast<float>(j);
    }
    Expect(ok, r, "all_gather values");
    cudaFree(send);
    cudaFree(recv);
    for (int root = 0; root < n; ++root) {
      void* b = Upload(std::vector<int64_t>(5, r * 10 + 1));
      Expect(c.Broadcast(b, 5, DataType::kInt64, root).ok(), r, "broadcast call");
      const auto v = Download<int64_t>(b, 5);
      Expect(std::all_of(v.begin(), v.end(), [root](int64_t x) { return x == root * 10 + 1; }), r,
             "broadcast values from root " + std::to_string(root));
      cudaFree(b);
    }
  }
  {  // all_to_all_v: rank r sends (r + j) % 3 rows [r, j, k] to rank j
    std::vector<int64_t> send_rows(n);
    std::vector<float> rows;
    for (int j = 0; j < n; ++j) {
      send_rows[j] = (r + j) % 3;
      for (int k = 0; k < send_rows[j]; ++k)
        rows.insert(rows.end(), {float(r), float(j), float(k)});
    }
    auto recv_rows = c.RecvRows(send_rows);
    Expect(recv_rows.ok(), r, "all_to_all_v counts");
    if (recv_rows.ok()) {
      int64_t total = 0;
      bool counts_ok = true;
      for (int src = 0; src < n; ++src) {
        counts_ok &= (*recv_rows)[src] == (src + r) % 3;
        total += (*recv_rows)[src];
      }
      Expect(counts_ok, r, "all_to_all_v received counts");
      void* send = Upload(rows);
      void* recv = Upload(std::vector<float>(3 * total, -1.0f));
      Expect(c.AllToAllV(send, send_rows, recv, *recv_rows, 3, DataType::kFloat32).ok(), r,
             "all_to_all_v call");
      const auto got = Download<float>(recv, 3 * total);
      bool ok = true;
      size_t at = 0;
      for (int src = 0; src < n; ++src) {
        for (int k = 0; k < (*recv_rows)[src]; ++k, at += 3) {
          ok &= got[at] == src && got[at + 1] == r && got[at + 2] == k;
        }
      }
      Expect(ok, r, "all_to_all_v rows");
      cudaFree(send);
      cudaFree(recv);
    }
  }
  {  // split into even and odd ranks
    auto sub = c.Split(r % 2, -r);
    Expect(sub.ok(), r, "split");
    if (sub.ok()) {
      Expect((*sub)->size() == (n + (r % 2 == 0 ? 1 : 0)) / 2, r, "split size");
      void* t = Upload(std::vector<int64_t>{r});
      Expect((*sub)->AllReduce(t, 1, DataType::kInt64, ReduceOp::kSum).ok(), r, "split all_reduce");
      int64_t expected = 0;
      for (int j = r % 2; j < n; j += 2) expected += j;
      Expect(Download<int64_t>(t, 1)[0] == expected, r, "split all_reduce value");
      cudaFree(t);
    }
  }
  Expect(c.Barrier().ok(), r, "barrier");
}

// nccl-tests' columns: size (B), count (elements), type, time (us), algbw and busbw (GB/s).
void Bench(NcclCommunicator& c) {
  const int n = c.size();
  if (c.rank() == 0) {
    std::printf("# %10s %12s %6s %12s %8s %8s   %s\n", "size(B)", "count", "type", "time(us)",
                "algbw", "busbw", "collective");
  }
  for (const char* op : {"all_reduce", "all_to_all_v"}) {
    for (size_t bytes = 4096; bytes <= (size_t{64} << 20); bytes *= 4) {
      const size_t count = bytes / sizeof(float);
      void* send = nullptr;
      void* recv = nullptr;
      cudaMalloc(&send, bytes);
      cudaMalloc(&recv, bytes);
      const size_t row = std::max<size_t>(1, count / n);
      std::vector<int64_t> rows(n, static_cast<int64_t>(count / n / row));
      auto run = [&] {
        const absl::Status status =
            std::string(op) == "all_reduce"
                ? c.AllReduce(send, count, DataType::kFloat32, ReduceOp::kSum)
                : c.AllToAllV(send, rows, recv, rows, row, DataType::kFloat32);
        if (!status.ok())
          Expect(false, c.rank(),
                 std::string(op) + " in the benchmark: " + std::string(status.message()));
      };
      for (int i = 0; i < 5; ++i) run();
      const int iters = 20;
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) run();
      const double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
              .count() /
          iters;
      const double algbw = bytes / us / 1e3;
      const double factor = std::string(op) == "all_reduce" ? 2.0 * (n - 1) / n : double(n - 1) / n;
      if (c.rank() == 0) {
        std::printf("  %10zu %12zu %6s %12.2f %8.2f %8.2f   %s\n", bytes, count, "float", us, algbw,
                    algbw * factor, op);
      }
      cudaFree(send);
      cudaFree(recv);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int want = 8;
  bool bench = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--ranks" && i + 1 < argc) want = std::atoi(argv[++i]);
    if (std::string(argv[i]) == "--bench") bench = true;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("nccl_test: no CUDA device here; skipped\n");
    return 77;
  }
  const int n = std::min(want, devices);
  std::printf("nccl_test: NCCL %s, %d rank(s) on %d device(s)\n",
              NcclCommunicator::Version().c_str(), n, devices);
  SharedBroadcast shared(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto comm =
          NcclCommunicator::Create(r, n, r, [&shared, r](void* data, size_t bytes, int root) {
            return shared.Broadcast(data, bytes, root, r);
          });
      Expect(comm.ok(), r, comm.ok() ? "create" : std::string(comm.status().message()));
      if (!comm.ok()) return;
      Conformance(**comm);
      if (bench) Bench(**comm);
    });
  }
  for (auto& t : threads) t.join();
  std::printf("%d passed, %d failed\n", g_passed.load(), g_failed.load());
  return g_failed == 0 ? 0 : 1;
}
