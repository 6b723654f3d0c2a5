// Domain-labelled datasets held in memory: one tensor of images and labels per domain with its
// seeded in/out split (DESIGN.md section 4, data::DomainDataset), plus the registry of dataset
// names that configurations use and their known shapes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>

namespace moa::data {

/// One environment: images (N x C x H x W float in [0, 1]), labels (N int64), and the indices of
/// its `in` and `out` splits.
struct Domain {
  std::string name;
  torch::Tensor images;
  torch::Tensor labels;
  std::vector<int64_t> in;
  std::vector<int64_t> out;
};

struct DomainDataset {
  std::string name;
  std::vector<Domain> domains;
  int64_t num_classes = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
};

/// What is known about a dataset name without reading any data.
struct DatasetInfo {
  std::string name;
  std::vector<std::string> environments;
  int64_t num_classes;
  int64_t channels;
  int64_t image_size;
  /// The protocol's defaults for this dataset (the MoA reference: 5001 steps, a checkpoint every
  /// 200, DomainNet 15001 and 1000; DomainBed's 100 for the MNIST family).
  int64_t default_steps;
  int64_t default_checkpoint_freq;
};

/// The known dataset names: RotatedMNIST, RotatedFashionMNIST, FashionMNIST and MNIST (one
/// upright domain, for pretraining), and DomainBed's image datasets by their DomainBed names.
absl::StatusOr<DatasetInfo> LookupDataset(const std::string& name);
std::vector<std::string> KnownDatasets();

/// Which IDX split builds the domains: DomainBed concatenates both.
enum class IdxSource { kAll, kTrain, kTest };
absl::StatusOr<IdxSource> ParseIdxSource(const std::string& text);

struct LoadOptions {
  std::string dataset;
  std::string data_dir;  // empty: the installed Fashion-MNIST folder for the Fashion datasets
  IdxSource source = IdxSource::kAll;
  int64_t seed = 0;        // torch::manual_seed before randperm, as DomainBed's --seed
  int64_t trial_seed = 0;  // in/out split seed
  double holdout_fraction = 0.2;
  int64_t max_per_domain = 0;  // 0: no cap; else keep the first N of each domain
};

/// Loads a dataset by name and splits every domain into in/out.
absl::StatusOr<DomainDataset> LoadDataset(const LoadOptions& options);

/// DomainBed's RotatedMNIST construction on `images` (uint8 N x 28 x 28) and `labels`:
/// randperm after torch::manual_seed(seed), domain i takes every len(angles)-th image from i,
/// rotated by angles[i] like torchvision on PIL images; float images in [0, 1], N x 1 x H x W.
std::vector<Domain> BuildRotatedDomains(const torch::Tensor& images, const torch::Tensor& labels,
                                        const std::vector<double>& angles, int64_t seed);

/// Where Debian's dataset-fashion-mnist package installs its files.
inline constexpr const char* kDebianFashionMnistDir = "/usr/share/datasets/fashion-mnist";

}  // namespace moa::data
