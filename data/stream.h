// Per-domain infinite minibatch streams (docs/architecture.md, One training step, step 1, and Keyed
// randomness). The sample indices of training domain d at step s are drawn with replacement from a
// generator keyed by (seed, d, s), so the data does not depend on the number of ranks or on where a
// run was resumed; data-parallel rank r takes its contiguous slice of each domain's global
// minibatch. A background thread prepares the next batches so the training loop does not wait in
// steady state.
//
// Image folders: `workers` decode threads per rank take the samples of the next `prefetch` steps
// in order, decode each file, augment it with parameters keyed by (seed, step, domain, position
// in the domain's global minibatch) and write the normalised pixels straight into their row of
// the step's batch tensor, so a batch is assembled without a copy. SplitLoader reads evaluation
// splits the same way with the evaluation transform.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
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
  int64_t first_step = 0;   // a resumed run starts here
  int64_t prefetch = 4;     // batches prepared ahead; 0 prepares on demand in the caller's thread
  bool pin_memory = false;  // page-locked batches, for asynchronous copies to a GPU (needs CUDA)
  // Image folders only:
  int64_t workers = 2;       // decode threads
  int64_t image_size = 224;  // the transforms' output side
  bool augment = true;       // the training transform (false: the evaluation transform)
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
  /// Image folders: throws std::runtime_error naming a file that fails to decode.
  Batch Next();

 private:
  // One step of an image-folder stream being filled by the decode threads.
  struct PendingBatch {
    Batch batch;
    std::vector<int64_t> domains;    // per row: environment index
    std::vector<int64_t> samples;    // per row: sample index in the domain
    std::vector<int64_t> positions;  // per row: position in the domain's global minibatch
    int64_t claimed = 0;             // rows handed to a thread
    int64_t remaining = 0;           // rows not yet written
    std::string error;
  };

  Batch Make(int64_t step) const;
  void Produce();
  std::unique_ptr<PendingBatch> Allocate(int64_t step) const;
  void Decode();
  Batch NextImages();

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
  bool from_files_ = false;
  std::deque<std::unique_ptr<PendingBatch>> pending_;  // steps in order, from next_step_
  std::vector<std::thread> decoders_;
};

/// Reads one evaluation split (`indices`: sample indices of `domain`) in batches, in order: the
/// evaluation transform for image folders (the next batch decoded on `workers` threads while
/// the caller uses the current one), the stored images otherwise.
class SplitLoader {
 public:
  SplitLoader(const Domain& domain, std::vector<int64_t> indices, int64_t batch_size,
              int64_t workers, int64_t image_size = 224);
  ~SplitLoader();
  SplitLoader(const SplitLoader&) = delete;
  SplitLoader& operator=(const SplitLoader&) = delete;

  /// The next batch; false after the last. Throws std::runtime_error naming a file that fails
  /// to decode.
  bool Next(torch::Tensor* images, torch::Tensor* labels);

 private:
  torch::Tensor Load(int64_t begin) const;

  const Domain& domain_;
  std::vector<int64_t> indices_;
  int64_t batch_size_;
  int64_t workers_;
  int64_t image_size_;
  int64_t next_ = 0;
  std::future<torch::Tensor> ahead_;
};

/// Decodes `sample_ids` of an image-folder domain with the evaluation transform on `workers`
/// threads into an N x 3 x size x size tensor; throws std::runtime_error naming a failing file.
torch::Tensor LoadEvalImages(const Domain& domain, const std::vector<int64_t>& sample_ids,
                             int64_t image_size, int64_t workers);

}  // namespace moa::data
