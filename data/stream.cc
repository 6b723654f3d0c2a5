#include "data/stream.h"

#include <omp.h>

#include <stdexcept>

namespace moa::data {
std::vector<int64_t> DrawIndices(int64_t seed, int64_t domain, int64_t step, int64_t in_size,
                                 int64_t batch_size) {
  KeyedRng rng(
      {static_cast<uint64_t>(seed), static_cast<uint64_t>(domain), static_cast<uint64_t>(step)});
  std::vector<int64_t> indices(batch_size);
  for (int64_t& index : indices) index = static_cast<int64_t>(rng.Below(in_size));
  return indices;
}

DomainStream::DomainStream(const DomainDataset& dataset, StreamOptions options)
    : dataset_(dataset),
      options_(std::move(options)),
      next_step_(options_.first_step),
      produce_step_(options_.first_step) {
  if (options_.batch_size % options_.dp_size != 0) {
    throw std::invalid_argument("data.batch_size " + std::to_string(options_.batch_size) +
                                " does not divide among " + std::to_string(options_.dp_size) +
                                " data-parallel ranks");
  }
  for (int64_t d : options_.train_domains) {
    const Domain& domain = dataset_.domains.at(d);
    if (domain.in.empty()) {
      throw std::invalid_argument("domain " + domain.name + " has an empty `in` split");
    }
    in_indices_.push_back(torch::tensor(domain.in, torch::kInt64));
  }
  if (options_.prefetch > 0) producer_ = std::thread([this] { Produce(); });
}

DomainStream::~DomainStream() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (producer_.joinable()) producer_.join();
}

Batch DomainStream::Make(int64_t step) const {
  const int64_t per_rank = options_.batch_size / options_.dp_size;
  const int64_t begin = options_.dp_rank * per_rank;
  std::vector<torch::Tensor> images, labels, domain_ids;
  for (size_t k = 0; k < options_.train_domains.size(); ++k) {
    const int64_t d = options_.train_domains[k];
    const Domain& domain = dataset_.domains[d];
    std::vector<int64_t> draw =
        DrawIndices(options_.seed, d, step, in_indices_[k].size(0), options_.batch_size);
    std::vector<int64_t> mine(draw.begin() + begin, draw.begin() + begin + per_rank);
    const torch::Tensor sample_ids =
        in_indices_[k].index_select(0, torch::tensor(mine, torch::kInt64));
    images.push_back(domain.images.index_select(0, sample_ids));
    labels.push_back(domain.labels.index_select(0, sample_ids));
    domain_ids.push_back(torch::full({per_rank}, d, torch::kInt64));
  }
  Batch batch;
  batch.step = step;
  batch.images = torch::cat(images);
  batch.labels = torch::cat(labels);
  batch.domain_ids = torch::cat(domain_ids);
  return batch;
}

void DomainStream::Produce() {
  // Tensor ops here must not fight the training loop for the cores; this sets only this
  // thread's OpenMP team size.
  omp_set_num_threads(1);
  while (true) {
    int64_t step;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] {
        return stop_ || static_cast<int64_t>(ready_.size()) < options_.prefetch;
      });
      if (stop_) return;
      step = produce_step_++;
    }
    Batch batch = Make(step);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.push_back(std::move(batch));
    }
    changed_.notify_all();
  }
}

Batch DomainStream::Next() {
  if (options_.prefetch == 0) return Make(next_step_++);
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return !ready_.empty(); });
  Batch batch = std::move(ready_.front());
  ready_.pop_front();
  ++next_step_;
  lock.unlock();
  changed_.notify_all();
  return batch;
}

}  // namespace moa::data
