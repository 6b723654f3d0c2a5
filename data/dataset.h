// Domain-labelled datasets: per domain, either a tensor of images held in memory (the MNIST family)
// or the image files of DomainBed's folder layout (PACS, VLCS, OfficeHome, TerraIncognita,
// DomainNet, and ImageFolder for users' own data), with labels and the seeded in/out split
// (docs/architecture.md, Folders and Keyed randomness); plus the registry of dataset names that
// configurations use and their known shapes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>

namespace moa::data {

/// One environment: images (N x C x H x W float in [0, 1]) or, for image folders, one file path
/// per sample (images then undefined); labels (N int64); the indices of its `in` and `out` splits.
struct Domain {
  std::string name;
  torch::Tensor images;
  std::vector<std::string> files;
  torch::Tensor labels;
  std::vector<int64_t> in;
  std::vector<int64_t> out;

  bool from_files() const { return !images.defined(); }
  int64_t size() const { return labels.size(0); }
};

struct DomainDataset {
  std::string name;
  std::vector<Domain> domains;
  std::vector<std::string> classes;  // class folder names (image folders only)
  int64_t num_classes = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
};

/// What is known about a dataset name without reading any data. ImageFolder knows neither its
/// environments nor its classes (num_classes 0) before its folder is scanned.
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
  /// Image folders: the dataset's folder under data.data_dir, as DomainBed's download script
  /// names it ("" for ImageFolder, whose data.data_dir is the dataset folder itself).
  std::string folder;
};

/// The known dataset names: RotatedMNIST, RotatedFashionMNIST, FashionMNIST and MNIST (one
/// upright domain, for pretraining), DomainBed's image datasets by their DomainBed names, and
/// ImageFolder (any folder with DomainBed's layout).
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
  // Image folders: how much of every image is verified before the run (none, header, full),
  // whether images that fail are left out (and counted in the log) instead of an error, and the
  // threads that verify them.
  std::string check = "header";
  bool skip_corrupt = false;
  int workers = 2;
};

/// The folder an image-folder dataset is read from: data_dir/<DomainBed's folder name>, or
/// data_dir itself when that has no such sub-folder (and always for ImageFolder).
std::string ImageFolderRoot(const DatasetInfo& info, const std::string& data_dir);

/// Loads a dataset by name and splits every domain into in/out. Image folders are scanned and
/// checked (image_folder.h); their images are decoded later, by the stream and the evaluator.
absl::StatusOr<DomainDataset> LoadDataset(const LoadOptions& options);

/// What a model of the dataset needs to know (classes, environments) without reading any image:
/// LookupDataset's description, completed for ImageFolder by scanning the folder layout under
/// `data_dir` as LoadDataset does (so `moa info` and `moa export` build the model `train` built).
/// Errors name the folder at fault, or say that data.data_dir is required.
absl::StatusOr<DatasetInfo> DescribeDataset(const std::string& name, const std::string& data_dir);

/// The dataset's class names in label order: the class folders of an image-folder dataset
/// (scanned under `data_dir`), torchvision's names for Fashion-MNIST, the digits for MNIST.
absl::StatusOr<std::vector<std::string>> DatasetClassNames(const std::string& name,
                                                           const std::string& data_dir);

/// Fills what `info` could not know before the data was read (ImageFolder's environments and
/// class count) from `dataset`, and checks that `test_envs` name environments it has.
absl::Status CompleteInfo(const DomainDataset& dataset, const std::vector<int64_t>& test_envs,
                          DatasetInfo* info);

/// DomainBed's RotatedMNIST construction on `images` (uint8 N x 28 x 28) and `labels`:
/// randperm after torch::manual_seed(seed), domain i takes every len(angles)-th image from i,
/// rotated by angles[i] like torchvision on PIL images; float images in [0, 1], N x 1 x H x W.
std::vector<Domain> BuildRotatedDomains(const torch::Tensor& images, const torch::Tensor& labels,
                                        const std::vector<double>& angles, int64_t seed);

/// Where Debian's dataset-fashion-mnist package installs its files.
inline constexpr const char* kDebianFashionMnistDir = "/usr/share/datasets/fashion-mnist";

}  // namespace moa::data
