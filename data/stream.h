// Per-domain infinite minibatch streams (DESIGN.md section 3). The sample indices of training
// domain d at step s are drawn with replacement from a generator keyed by (seed, d, s), so the
// data does not depend on the number of ranks or on where a run was resumed; data-parallel rank
// r takes its contiguous slice of each domain's global minibatch. A background thread prepares
// the next batches so the training loop does not wait in steady state.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "data/dataset.h"
#include "data/keyed_rng.h"

namespace moa::data {

/// The concatenation of one minibatch per training domain, in domain order.
struct Batch {
  int64_t step = 0;
  torch::Tensor images;      // B x C x H x W float
  torch::Tensor labels;      // B int64
  torch::Tensor domain_ids;  // B int64: the dataset's environment index of each sample
};

struct StreamOptions {
  std::vector<int64_t> train_domains;  // environment indices, in order
  int64_t batch_size = 32;             // per domain, global (over all data-parallel ranks)
  int64_t seed = 0;
  int64_t dp_rank = 0;
  int64_t dp_size = 1;
  int64_t first_step = 0;  // a resumed run starts here
  int64_t prefetch = 4;    // batches prepared ahead; 0 prepares on demand in the caller's thread
};

/// The global sample indices (positions in domain.in) of one domain's minibatch at `step`.
std::vector<int64_t> DrawIndices(int64_t seed, int64_t domain, int64_t step, int64_t in_size,
                                 int64_t batch_size);

class DomainStream {
 public:
  DomainStream(const DomainDataset& dataset, StreamOptions options);
  ~DomainStream();
  DomainStream(const DomainStream&) = delete;
  DomainStream& operator=(const DomainStream&) = delete;

  /// The next step's batch (this rank's slice); blocks only when prefetch has fallen behind.
  Batch Next();

 private:
  Batch Make(int64_t step) const;
  void Produce();

  const DomainDataset& dataset_;
  StreamOptions options_;
  std::vector<torch::Tensor> in_indices_;  // per training domain, int64 positions -> sample ids
  int64_t next_step_;                      // next step the consumer gets
  int64_t produce_step_;                   // next step the producer makes
  std::deque<Batch> ready_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stop_ = false;
  std::thread producer_;
};

}  // namespace moa::data
