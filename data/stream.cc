#include "data/stream.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>

#include "common/error.h"
#include "data/image_folder.h"
#include "data/transforms.h"

namespace moa::data {
namespace {

// Distinguishes augmentation keys from the index draws' keys.
constexpr uint64_t kAugmentTag = 0x617567;

// Decodes one file into `out` (3 x size x size floats) with the training transform keyed by
// `key`, or the evaluation transform when `augment` is false; throws naming the file.
void DecodeInto(const std::string& path, bool augment, std::initializer_list<uint64_t> key,
                int size, float* out) {
  absl::StatusOr<RgbImage> image = DecodeImageFile(path);
  if (!image.ok()) throw std::runtime_error(std::string(image.status().message()));
  if (augment) {
    TrainTransform(*image, SampleAugment(key, image->width, image->height), size, out);
  } else {
    EvalTransform(*image, size, out);
  }
}

}  // namespace

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
    from_files_ = from_files_ || domain.from_files();
  }
  if (from_files_) {
    // A step of decoded images is large (96 x 3 x 224 x 224 floats: 58 MB); the workers share
    // the rows of a step, so two or three steps ahead keep them busy.
    options_.prefetch = std::clamp<int64_t>(options_.prefetch, 1, 3);
    for (int64_t t = 0; t < std::max<int64_t>(1, options_.workers); ++t) {
      decoders_.emplace_back([this] { Decode(); });
    }
  } else if (options_.prefetch > 0) {
    producer_ = std::thread([this] { Produce(); });
  }
}

DomainStream::~DomainStream() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (producer_.joinable()) producer_.join();
  for (std::thread& t : decoders_) t.join();
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
  if (options_.pin_memory) {
    batch.images = batch.images.pin_memory();
    batch.labels = batch.labels.pin_memory();
  }
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

std::unique_ptr<DomainStream::PendingBatch> DomainStream::Allocate(int64_t step) const {
  const int64_t per_rank = options_.batch_size / options_.dp_size;
  const int64_t begin = options_.dp_rank * per_rank;
  const int64_t rows = per_rank * static_cast<int64_t>(options_.train_domains.size());
  auto pending = std::make_unique<PendingBatch>();
  std::vector<int64_t> labels;
  for (size_t k = 0; k < options_.train_domains.size(); ++k) {
    const int64_t d = options_.train_domains[k];
    const Domain& domain = dataset_.domains[d];
    const std::vector<int64_t> draw =
        DrawIndices(options_.seed, d, step, in_indices_[k].size(0), options_.batch_size);
    for (int64_t j = begin; j < begin + per_rank; ++j) {
      const int64_t sample = domain.in[draw[j]];
      pending->domains.push_back(d);
      pending->samples.push_back(sample);
      pending->positions.push_back(j);
      labels.push_back(domain.labels.data_ptr<int64_t>()[sample]);
    }
  }
  const int64_t size = options_.image_size;
  pending->batch.step = step;
  pending->batch.images =
      torch::empty({rows, 3, size, size},
                   torch::TensorOptions(torch::kFloat32).pinned_memory(options_.pin_memory));
  pending->batch.labels = torch::tensor(labels, torch::kInt64);
  if (options_.pin_memory) pending->batch.labels = pending->batch.labels.pin_memory();
  pending->batch.domain_ids = torch::tensor(pending->domains, torch::kInt64);
  pending->remaining = rows;
  return pending;
}

void DomainStream::Decode() {
  omp_set_num_threads(1);
  const int size = static_cast<int>(options_.image_size);
  while (true) {
    PendingBatch* pending = nullptr;
    int64_t row = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // The first step with an unclaimed row, allocating the next step while fewer than
      // `prefetch` are in flight.
      changed_.wait(lock, [&] {
        if (stop_) return true;
        for (const auto& p : pending_) {
          if (p->claimed < p->batch.images.size(0)) return true;
        }
        return static_cast<int64_t>(pending_.size()) < options_.prefetch;
      });
      if (stop_) return;
      for (const auto& p : pending_) {
        if (p->claimed < p->batch.images.size(0)) {
          pending = p.get();
          break;
        }
      }
      if (pending == nullptr) {
        pending_.push_back(Allocate(produce_step_++));
        pending = pending_.back().get();
      }
      row = pending->claimed++;
    }
    std::string error;
    try {
      const int64_t d = pending->domains[row];
      DecodeInto(dataset_.domains[d].files[pending->samples[row]], options_.augment,
                 {kAugmentTag, static_cast<uint64_t>(options_.seed),
                  static_cast<uint64_t>(pending->batch.step), static_cast<uint64_t>(d),
                  static_cast<uint64_t>(pending->positions[row])},
                 size, pending->batch.images.data_ptr<float>() + row * 3 * size * size);
    } catch (const std::exception& e) {
      error = ExceptionMessage(e);
    }
    bool done;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error.empty() && pending->error.empty()) pending->error = error;
      done = --pending->remaining == 0;
    }
    if (done) changed_.notify_all();
  }
}

Batch DomainStream::NextImages() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return !pending_.empty() && pending_.front()->remaining == 0; });
  std::unique_ptr<PendingBatch> pending = std::move(pending_.front());
  pending_.pop_front();
  ++next_step_;
  lock.unlock();
  changed_.notify_all();
  if (!pending->error.empty()) {
    throw std::runtime_error("step " + std::to_string(pending->batch.step) + ": " + pending->error);
  }
  return std::move(pending->batch);
}

Batch DomainStream::Next() {
  if (from_files_) return NextImages();
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

torch::Tensor LoadEvalImages(const Domain& domain, const std::vector<int64_t>& sample_ids,
                             int64_t image_size, int64_t workers) {
  const int64_t n = static_cast<int64_t>(sample_ids.size());
  torch::Tensor images = torch::empty({n, 3, image_size, image_size}, torch::kFloat32);
  float* base = images.data_ptr<float>();
  const int64_t stride = 3 * image_size * image_size;
  ParallelFor(n, static_cast<int>(workers), [&](int64_t i) {
    DecodeInto(domain.files[sample_ids[i]], false, {}, static_cast<int>(image_size),
               base + i * stride);
  });
  return images;
}

SplitLoader::SplitLoader(const Domain& domain, std::vector<int64_t> indices, int64_t batch_size,
                         int64_t workers, int64_t image_size)
    : domain_(domain),
      indices_(std::move(indices)),
      batch_size_(batch_size),
      workers_(std::max<int64_t>(1, workers)),
      image_size_(image_size) {
  if (domain_.from_files() && !indices_.empty()) {
    ahead_ = std::async(std::launch::async, [this] {
      omp_set_num_threads(1);
      return Load(0);
    });
  }
}

SplitLoader::~SplitLoader() {
  if (ahead_.valid()) ahead_.wait();
}

torch::Tensor SplitLoader::Load(int64_t begin) const {
  const int64_t end = std::min<int64_t>(begin + batch_size_, indices_.size());
  const std::vector<int64_t> ids(indices_.begin() + begin, indices_.begin() + end);
  if (!domain_.from_files()) {
    return domain_.images.index_select(0, torch::tensor(ids, torch::kInt64));
  }
  return LoadEvalImages(domain_, ids, image_size_, workers_);
}

bool SplitLoader::Next(torch::Tensor* images, torch::Tensor* labels) {
  const int64_t begin = next_;
  if (begin >= static_cast<int64_t>(indices_.size())) return false;
  const int64_t end = std::min<int64_t>(begin + batch_size_, indices_.size());
  next_ = end;
  if (ahead_.valid()) {
    *images = ahead_.get();  // rethrows a decoding error
    if (end < static_cast<int64_t>(indices_.size())) {
      ahead_ = std::async(std::launch::async, [this, end] {
        omp_set_num_threads(1);
        return Load(end);
      });
    }
  } else {
    *images = Load(begin);
  }
  const std::vector<int64_t> ids(indices_.begin() + begin, indices_.begin() + end);
  *labels = domain_.labels.index_select(0, torch::tensor(ids, torch::kInt64));
  return true;
}

}  // namespace moa::data
