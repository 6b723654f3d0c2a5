#include "parallel/grad_sync.h"

#include <chrono>

#include "parallel/mpi_communicator.h"

namespace moa::parallel {

GradientSynchronizer::GradientSynchronizer(Communicator& group, std::vector<torch::Tensor> params,
                                           int64_t bucket_bytes)
    : group_(group),
      params_(std::move(params)),
      launch_inline_(group.backend_name() == "nccl" ||
                     (group.backend_name() == "mpi" && !MpiAllowsConcurrentCalls())) {
  // Buckets follow reverse registration order, roughly the order backward produces gradients.
  bucket_of_.assign(params_.size(), -1);
  slot_of_.assign(params_.size(), -1);
  arrived_.assign(params_.size(), false);
  int64_t bytes = 0;
  for (int64_t i = static_cast<int64_t>(params_.size()) - 1; i >= 0; --i) {
    const int64_t size = params_[i].numel() * static_cast<int64_t>(params_[i].element_size());
    if (buckets_.empty() || (bytes > 0 && bytes + size > bucket_bytes)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& bucket = buckets_.back();
    bucket_of_[i] = static_cast<int64_t>(buckets_.size()) - 1;
    slot_of_[i] = static_cast<int64_t>(bucket.params.size());
    bucket.offsets.push_back(
        bucket.params.empty() ? 0 : bucket.offsets.back() + params_[bucket.params.back()].numel());
    bucket.params.push_back(i);
    bytes += size;
  }
  for (Bucket& bucket : buckets_) {
    const int64_t total = bucket.offsets.back() + params_[bucket.params.back()].numel();
    bucket.buffer =
        torch::zeros({total}, params_[bucket.params.front()].options().requires_grad(false));
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t index = static_cast<int64_t>(i);
    params_[i].register_hook([this, index](torch::Tensor grad) {
      OnGradient(index, grad);
      return grad;
    });
  }
  ResetStep();
  if (!launch_inline_) thread_ = std::thread([this] { CommunicationLoop(); });
}

GradientSynchronizer::~GradientSynchronizer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void GradientSynchronizer::ResetStep() {
  for (Bucket& bucket : buckets_) {
    bucket.pending = static_cast<int64_t>(bucket.params.size());
    bucket.launched = bucket.done = false;
    bucket.status = absl::OkStatus();
  }
  arrived_.assign(params_.size(), false);
  next_launch_ = 0;
}

void GradientSynchronizer::OnGradient(int64_t param, const torch::Tensor& grad) {
  Bucket& bucket = buckets_[bucket_of_[param]];
  const int64_t slot = slot_of_[param];
  {
    torch::NoGradGuard no_grad;
    bucket.buffer.narrow(0, bucket.offsets[slot], grad.numel()).copy_(grad.reshape({-1}));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (!arrived_[param]) {
    arrived_[param] = true;
    --bucket.pending;
  }
  LaunchReady();
}

void GradientSynchronizer::LaunchReady() {
  bool launched = false;
  while (next_launch_ < static_cast<int64_t>(buckets_.size()) &&
         buckets_[next_launch_].pending == 0) {
    Bucket& bucket = buckets_[next_launch_];
    bucket.launched = true;
    if (launch_inline_) {
      // From the backward thread itself: NCCL queues it on the group's stream, and every rank
      // issues its collectives on all groups in backward order, which NCCL needs to avoid a
      // deadlock; an MPI without MPI_THREAD_MULTIPLE runs it here, never beside another call.
      // Deferred: on NCCL the rest of backward overlaps it; Finish waits for it.
      bucket.status = group_.AllReduceDeferred(bucket.buffer, ReduceOp::kAverage);
      bucket.done = true;
      ++next_launch_;
    } else {
      queue_.push_back(next_launch_++);
    }
    launched = true;
  }
  if (launched) changed_.notify_all();
}

void GradientSynchronizer::CommunicationLoop() {
  while (true) {
    int64_t index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      index = queue_.front();
      queue_.pop_front();
    }
    Bucket& bucket = buckets_[index];
    absl::Status status = group_.AllReduce(bucket.buffer, ReduceOp::kAverage);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      bucket.status = status;
      bucket.done = true;
    }
    changed_.notify_all();
  }
}

absl::Status GradientSynchronizer::Finish() {
  const auto start = std::chrono::steady_clock::now();
  {
    std::unique_lock<std::mutex> lock(mutex_);
    // Parameters without a gradient this step contribute zeros.
    for (size_t i = 0; i < params_.size(); ++i) {
      if (arrived_[i]) continue;
      Bucket& bucket = buckets_[bucket_of_[i]];
      bucket.buffer.narrow(0, bucket.offsets[slot_of_[i]], params_[i].numel()).zero_();
      arrived_[i] = true;
      --bucket.pending;
    }
    LaunchReady();
    changed_.wait(lock, [this] {
      for (const Bucket& b : buckets_) {
        if (!b.done) return false;
      }
      return true;
    });
  }
  absl::Status status = group_.WaitForDeferred();
  last_wait_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  torch::NoGradGuard no_grad;
  for (Bucket& bucket : buckets_) {
    if (!bucket.status.ok() && status.ok()) status = bucket.status;
    for (size_t s = 0; s < bucket.params.size(); ++s) {
      torch::Tensor& p = params_[bucket.params[s]];
      const torch::Tensor averaged =
          bucket.buffer.narrow(0, bucket.offsets[s], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(averaged);
      } else {
        p.mutable_grad() = averaged.clone();
      }
    }
  }
  ResetStep();
  return status;
}

}  // namespace moa::parallel
