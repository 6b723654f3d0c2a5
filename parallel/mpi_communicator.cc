// The C bindings only: Open MPI's C++ bindings need a library moa does not link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include "parallel/mpi_communicator.h"

#include "common/logging.h"
#include "common/status_macros.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

namespace moa::parallel {
namespace {

bool g_mpi_active = false;
bool g_mpi_thread_multiple = true;

const char* ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
  }
  return "an unknown MPI thread level";
}

// The level to ask MPI for: MPI_THREAD_MULTIPLE unless kMpiThreadLevelVariable names another.
int RequestedThreadLevel() {
  const char* text = std::getenv(kMpiThreadLevelVariable);
  if (text == nullptr || *text == '\0') return MPI_THREAD_MULTIPLE;
  const std::string name(text);
  if (name == "multiple") return MPI_THREAD_MULTIPLE;
  if (name == "serialized") return MPI_THREAD_SERIALIZED;
  if (name == "funneled") return MPI_THREAD_FUNNELED;
  if (name == "single") return MPI_THREAD_SINGLE;
  std::fprintf(stderr, "moa: %s = %s is not multiple, serialized, funneled or single\n",
               kMpiThreadLevelVariable, text);
  std::exit(2);
}

absl::StatusOr<MPI_Datatype> TypeOf(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return MPI_FLOAT;
    case torch::kFloat64:
      return MPI_DOUBLE;
    case torch::kInt64:
      return MPI_INT64_T;
    case torch::kInt32:
      return MPI_INT32_T;
    case torch::kUInt8:
      return MPI_UINT8_T;
    case torch::kBFloat16:
    case torch::kHalf:
      // 16-bit floats only travel (gathers, broadcasts, all-to-all); reductions widen them.
      return MPI_UINT16_T;
    default:
      return absl::InvalidArgumentError(std::string("MPI communicator: unsupported dtype ") +
                                        std::string(c10::toString(t.scalar_type())));
  }
}

class MpiCommunicator : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }
  ~MpiCommunicator() override {
    if (owned_ && g_mpi_active) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend_name() const override { return "mpi"; }

  absl::Status AllReduce(torch::Tensor& tensor, ReduceOp op) override {
    if (!tensor.device().is_cpu()) {
      return ThroughHost(tensor, [&](torch::Tensor& host) { return AllReduce(host, op); });
    }
    if (tensor.scalar_type() == torch::kBFloat16 || tensor.scalar_type() == torch::kHalf) {
      // MPI has no 16-bit float arithmetic: reduce in float32 and round once at the end.
      torch::Tensor wide = tensor.to(torch::kFloat32);
      MOA_RETURN_IF_ERROR(AllReduce(wide, op));
      tensor.copy_(wide);
      return absl::OkStatus();
    }
    MOA_RETURN_IF_ERROR(Check(tensor, "all_reduce"));
    auto type = TypeOf(tensor);
    if (!type.ok()) return type.status();
    const MPI_Op mpi_op = op == ReduceOp::kMax ? MPI_MAX : MPI_SUM;
    MOA_RETURN_IF_ERROR(
        Call("all_reduce", MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), Count(tensor.numel()),
                                         *type, mpi_op, comm_)));
    if (op == ReduceOp::kAverage) {
      if (tensor.is_floating_point()) {
        tensor.div_(size_);
      } else {
        tensor.floor_divide_(size_);
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& tensor) override {
    if (!tensor.device().is_cpu()) {
      MOA_ASSIGN_OR_RETURN(torch::Tensor gathered, AllGather(tensor.to(torch::kCPU)));
      return gathered.to(tensor.device());
    }
    const torch::Tensor input = tensor.contiguous();
    auto type = TypeOf(input);
    if (!type.ok()) return type.status();
    std::vector<int64_t> shape = input.sizes().vec();
    shape.insert(shape.begin(), size_);
    torch::Tensor out = torch::empty(shape, input.options());
    const int count = Count(input.numel());
    MOA_RETURN_IF_ERROR(Call("all_gather", MPI_Allgather(input.data_ptr(), count, *type,
                                                         out.data_ptr(), count, *type, comm_)));
    return out;
  }

  absl::Status Broadcast(torch::Tensor& tensor, int root) override {
    if (!tensor.device().is_cpu()) {
      return ThroughHost(tensor, [&](torch::Tensor& host) { return Broadcast(host, root); });
    }
    MOA_RETURN_IF_ERROR(Check(tensor, "broadcast"));
    if (root < 0 || root >= size_)
      return absl::InvalidArgumentError("broadcast root " + std::to_string(root) + " out of range");
    auto type = TypeOf(tensor);
    if (!type.ok()) return type.status();
    return Call("broadcast",
                MPI_Bcast(tensor.data_ptr(), Count(tensor.numel()), *type, root, comm_));
  }

  absl::StatusOr<torch::Tensor> AllToAllV(const torch::Tensor& input_tensor,
                                          const std::vector<int64_t>& send_rows,
                                          std::vector<int64_t>* recv_rows_out) override {
    if (!input_tensor.device().is_cpu()) {
      MOA_ASSIGN_OR_RETURN(torch::Tensor received,
                           AllToAllV(input_tensor.to(torch::kCPU), send_rows, recv_rows_out));
      return received.to(input_tensor.device());
    }
    const torch::Tensor input = input_tensor.contiguous();
    if (static_cast<int>(send_rows.size()) != size_) {
      return absl::InvalidArgumentError("all_to_all_v: " + std::to_string(send_rows.size()) +
                                        " send counts for " + std::to_string(size_) + " ranks");
    }
    int64_t total = 0;
    for (int64_t r : send_rows) total += r;
    if (total != input.size(0)) {
      return absl::InvalidArgumentError("all_to_all_v: send counts add up to " +
                                        std::to_string(total) + " rows but the input has " +
                                        std::to_string(input.size(0)));
    }
    auto type = TypeOf(input);
    if (!type.ok()) return type.status();
    // Counts first.
    std::vector<int64_t> recv_rows(size_);
    MOA_RETURN_IF_ERROR(Call(
        "all_to_all_v (counts)",
        MPI_Alltoall(send_rows.data(), 1, MPI_INT64_T, recv_rows.data(), 1, MPI_INT64_T, comm_)));
    // Elements per row from the trailing shape (an input with no rows still has a row width).
    int64_t row = 1;
    for (int64_t d = 1; d < input.dim(); ++d) row *= input.size(d);
    std::vector<int> send_counts(size_), send_displs(size_), recv_counts(size_), recv_displs(size_);
    int64_t send_offset = 0, recv_offset = 0;
    for (int j = 0; j < size_; ++j) {
      send_counts[j] = Count(send_rows[j] * row);
      send_displs[j] = Count(send_offset * row);
      recv_counts[j] = Count(recv_rows[j] * row);
      recv_displs[j] = Count(recv_offset * row);
      send_offset += send_rows[j];
      recv_offset += recv_rows[j];
    }
    std::vector<int64_t> shape = input.sizes().vec();
    if (shape.empty()) shape.push_back(0);
    shape[0] = recv_offset;
    torch::Tensor out = torch::empty(shape, input.options());
    MOA_RETURN_IF_ERROR(
        Call("all_to_all_v",
             MPI_Alltoallv(input.data_ptr(), send_counts.data(), send_displs.data(), *type,
                           out.data_ptr(), recv_counts.data(), recv_displs.data(), *type, comm_)));
    if (recv_rows_out) *recv_rows_out = recv_rows;
    return out;
  }

  absl::Status Barrier() override { return Call("barrier", MPI_Barrier(comm_)); }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    MPI_Comm sub;
    MOA_RETURN_IF_ERROR(Call("split", MPI_Comm_split(comm_, color, key, &sub)));
    return std::unique_ptr<Communicator>(new MpiCommunicator(sub, true));
  }

 private:
  static int Count(int64_t n) {
    if (n > std::numeric_limits<int>::max()) {
      AbortJob("MPI message of " + std::to_string(n) + " elements exceeds MPI's int count");
    }
    return static_cast<int>(n);
  }

  absl::Status Check(const torch::Tensor& t, const char* op) const {
    if (!t.is_contiguous()) {
      return absl::InvalidArgumentError(std::string("MPI ") + op + " needs a contiguous tensor");
    }
    return absl::OkStatus();
  }

  // Device tensors travel through host memory (this MPI is not assumed CUDA-aware): `op` works on
  // a host copy, which is copied back in place.
  template <typename Op>
  absl::Status ThroughHost(torch::Tensor& tensor, Op&& op) {
    torch::Tensor host = tensor.to(torch::kCPU).contiguous();
    MOA_RETURN_IF_ERROR(op(host));
    tensor.copy_(host);
    return absl::OkStatus();
  }

  absl::Status Call(const char* op, int code) const {
    if (code == MPI_SUCCESS) return absl::OkStatus();
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    return absl::UnavailableError("MPI " + std::string(op) + " failed on rank " +
                                  std::to_string(rank_) + ": " + std::string(text, length));
  }

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

bool LaunchedUnderMpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  if (!LaunchedUnderMpi()) return;
  const int requested = RequestedThreadLevel();
  int provided = MPI_THREAD_SINGLE;
  MPI_Init_thread(argc, argv, requested, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  active_ = g_mpi_active = true;
  g_mpi_thread_multiple = provided >= MPI_THREAD_MULTIPLE;
  if (provided < MPI_THREAD_SERIALIZED) {
    // Autograd runs a GPU's backward, and so the gradient hooks' collectives, on its own thread.
    AbortJob(std::string("MPI provides only ") + ThreadLevelName(provided) + " (asked for " +
             ThreadLevelName(requested) +
             "), but moa calls MPI from the backward pass's thread: it needs "
             "MPI_THREAD_SERIALIZED, and MPI_THREAD_MULTIPLE to overlap gradient averaging with "
             "backward. Use an MPI built with thread support (Open MPI: `ompi_info | grep "
             "-i thread` shows it)" +
             (requested < MPI_THREAD_MULTIPLE
                  ? std::string(", and unset ") + kMpiThreadLevelVariable
                  : std::string()));
  }
  if (!g_mpi_thread_multiple) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
      Log(LogLevel::kInfo) << "MPI provides " << ThreadLevelName(provided)
                           << ", not MPI_THREAD_MULTIPLE: gradient buckets are all-reduced on "
                              "the backward thread, one MPI call at a time (no overlap with "
                              "backward)";
    }
  }
}

MpiRuntime::~MpiRuntime() {
  if (active_) {
    g_mpi_active = false;
    MPI_Finalize();
  }
}

bool MpiAllowsConcurrentCalls() { return !g_mpi_active || g_mpi_thread_multiple; }

std::unique_ptr<Communicator> MakeWorldCommunicator() {
  if (!g_mpi_active) return MakeSelfCommunicator();
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, false);
}

void AbortJob(const std::string& message) {
  int rank = 0;
  if (g_mpi_active) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::fprintf(stderr, "moa: rank %d on %s failed: %s\n", rank, host, message.c_str());
  std::fflush(stderr);
  if (g_mpi_active) MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

std::string MpiVersion() {
  if (!g_mpi_active) return "none";
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(version, &length);
  std::string text(version, length);
  const size_t comma = text.find(',');
  return comma == std::string::npos ? text : text.substr(0, comma);
}

}  // namespace moa::parallel
