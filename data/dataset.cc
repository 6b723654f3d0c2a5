#include "data/dataset.h"

#include <filesystem>

#include "common/logging.h"
#include "common/status_macros.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/rotate.h"
#include "data/splits.h"

namespace moa::data {
namespace {

const std::vector<DatasetInfo>& Registry() {
  static const std::vector<DatasetInfo> registry = {
      {"RotatedMNIST", {"0", "15", "30", "45", "60", "75"}, 10, 1, 28, 5001, 100, ""},
      {"RotatedFashionMNIST", {"0", "15", "30", "45", "60", "75"}, 10, 1, 28, 5001, 100, ""},
      {"MNIST", {"upright"}, 10, 1, 28, 5001, 100, ""},
      {"FashionMNIST", {"upright"}, 10, 1, 28, 5001, 100, ""},
      {"PACS", {"art_painting", "cartoon", "photo", "sketch"}, 7, 3, 224, 5001, 200, "PACS"},
      {"VLCS", {"Caltech101", "LabelMe", "SUN09", "VOC2007"}, 5, 3, 224, 5001, 200, "VLCS"},
      {"OfficeHome",
       {"Art", "Clipart", "Product", "Real World"},
       65,
       3,
       224,
       5001,
       200,
       "office_home"},
      {"TerraIncognita",
       {"location_100", "location_38", "location_43", "location_46"},
       10,
       3,
       224,
       5001,
       200,
       "terra_incognita"},
      {"DomainNet",
       {"clipart", "infograph", "painting", "quickdraw", "real", "sketch"},
       345,
       3,
       224,
       15001,
       1000,
       "domain_net"},
      {"ImageFolder", {}, 0, 3, 224, 5001, 200, ""},
  };
  return registry;
}

bool IsFashion(const std::string& name) { return name.find("Fashion") != std::string::npos; }

// Finds `stem` or `stem.gz` in `dir`.
absl::StatusOr<std::string> FindIdx(const std::string& dir, const std::string& stem) {
  for (const std::string& candidate : {dir + "/" + stem, dir + "/" + stem + ".gz"}) {
    if (std::filesystem::exists(candidate)) return candidate;
  }
  return absl::NotFoundError("data.data_dir " + dir + ": neither " + stem + " nor " + stem +
                             ".gz exists");
}

struct IdxPair {
  torch::Tensor images;
  torch::Tensor labels;
};

absl::StatusOr<IdxPair> ReadIdxPair(const std::string& dir, const std::string& prefix,
                                    const DatasetInfo& info) {
  MOA_ASSIGN_OR_RETURN(std::string images_path, FindIdx(dir, prefix + "-images-idx3-ubyte"));
  MOA_ASSIGN_OR_RETURN(std::string labels_path, FindIdx(dir, prefix + "-labels-idx1-ubyte"));
  MOA_ASSIGN_OR_RETURN(torch::Tensor images, ReadIdx(images_path));
  MOA_ASSIGN_OR_RETURN(torch::Tensor labels, ReadIdx(labels_path));
  if (images.dim() != 3 || images.scalar_type() != torch::kUInt8) {
    return absl::DataLossError("IDX file " + images_path + ": expected uint8 N x H x W images");
  }
  if (labels.dim() != 1 || labels.size(0) != images.size(0)) {
    return absl::DataLossError("IDX file " + labels_path + ": " + std::to_string(labels.size(0)) +
                               " labels for " + std::to_string(images.size(0)) + " images in " +
                               images_path);
  }
  // The registry's image size and classes (DomainBed's models and rotations assume them).
  const std::string side = std::to_string(info.image_size);
  if (images.size(1) != info.image_size || images.size(2) != info.image_size) {
    return absl::DataLossError(
        "IDX file " + images_path + ": images are " + std::to_string(images.size(1)) + " x " +
        std::to_string(images.size(2)) + "; " + info.name + "'s are " + side + " x " + side);
  }
  if (labels.numel() > 0) {
    const int64_t largest = labels.max().item<int64_t>();
    if (largest >= info.num_classes) {
      return absl::DataLossError("IDX file " + labels_path + ": label " + std::to_string(largest) +
                                 " found; " + info.name + "'s labels lie in 0.." +
                                 std::to_string(info.num_classes - 1));
    }
  }
  return IdxPair{images, labels.to(torch::kInt64)};
}

// DomainBed's split of every domain: out = the first floor(n * holdout) of a shuffle seeded by
// seed_hash(trial_seed, environment index).
void SplitDomains(const LoadOptions& options, DomainDataset* dataset) {
  for (size_t i = 0; i < dataset->domains.size(); ++i) {
    Domain& domain = dataset->domains[i];
    InOutSplit split = SplitInOut(domain.size(), options.holdout_fraction,
                                  SeedHash(options.trial_seed, static_cast<int64_t>(i)));
    domain.in = std::move(split.in);
    domain.out = std::move(split.out);
  }
}

// Scans the folder layout of an image-folder dataset under data_dir (no image is read).
absl::StatusOr<FolderLayout> ScanDatasetFolder(const DatasetInfo& info,
                                               const std::string& data_dir) {
  if (data_dir.empty()) {
    return absl::InvalidArgumentError("data.data_dir must name the folder that holds " +
                                      (info.folder.empty()
                                           ? std::string("the dataset's environment folders")
                                           : info.folder + "/ (DomainBed's download layout)"));
  }
  return ScanImageFolder(ImageFolderRoot(info, data_dir), info.environments, info.num_classes);
}

// Scans, checks and (with skip_corrupt) filters an image-folder dataset into its domains.
absl::StatusOr<DomainDataset> LoadImageFolder(const LoadOptions& options, const DatasetInfo& info) {
  MOA_ASSIGN_OR_RETURN(ImageCheck check, ParseImageCheck(options.check));
  MOA_ASSIGN_OR_RETURN(FolderLayout layout, ScanDatasetFolder(info, options.data_dir));
  const std::string& root = layout.root;
  DomainDataset dataset;
  dataset.name = options.dataset;
  dataset.classes = layout.classes;
  dataset.num_classes = static_cast<int64_t>(layout.classes.size());
  dataset.channels = 3;
  dataset.height = dataset.width = info.image_size;
  std::vector<CheckReport> reports;
  CheckReport all;
  for (FolderEnvironment& env : layout.environments) {
    if (options.max_per_domain > 0 &&
        static_cast<int64_t>(env.files.size()) > options.max_per_domain) {
      env.files.resize(options.max_per_domain);
      env.labels.resize(options.max_per_domain);
    }
    reports.push_back(CheckImages(env.files, check, options.workers));
    all.checked += reports.back().checked;
    all.failures.insert(all.failures.end(), reports.back().failures.begin(),
                        reports.back().failures.end());
  }
  if (!all.failures.empty() && !options.skip_corrupt) {
    return absl::DataLossError(root + ": " + DescribeFailures(all) +
                               "\n(data.skip_corrupt = true leaves such images out)");
  }
  if (!all.failures.empty()) {
    Log(LogLevel::kWarning) << root << ": skipped " << all.failures.size() << " of " << all.checked
                            << " images that cannot be read (data.skip_corrupt)";
  }
  for (size_t e = 0; e < layout.environments.size(); ++e) {
    FolderEnvironment& env = layout.environments[e];
    const std::vector<CheckFailure>& failures = reports[e].failures;
    Domain domain;
    domain.name = env.name;
    std::vector<int64_t> labels;
    size_t failure = 0;
    for (size_t i = 0; i < env.files.size(); ++i) {
      if (failure < failures.size() && failures[failure].path == env.files[i]) {
        ++failure;
        continue;
      }
      domain.files.push_back(std::move(env.files[i]));
      labels.push_back(env.labels[i]);
    }
    if (domain.files.empty()) {
      return absl::DataLossError(root + "/" + env.name + " has no readable image");
    }
    domain.labels = torch::tensor(labels, torch::kInt64);
    dataset.domains.push_back(std::move(domain));
  }
  return dataset;
}

}  // namespace

std::string ImageFolderRoot(const DatasetInfo& info, const std::string& data_dir) {
  if (info.folder.empty()) return data_dir;
  const std::string nested = data_dir + "/" + info.folder;
  std::error_code error;
  if (std::filesystem::is_directory(nested, error)) return nested;
  // data_dir may already be the dataset folder: it then holds the first environment.
  if (!info.environments.empty() &&
      std::filesystem::is_directory(data_dir + "/" + info.environments[0], error)) {
    return data_dir;
  }
  return nested;
}

absl::StatusOr<DatasetInfo> LookupDataset(const std::string& name) {
  for (const DatasetInfo& info : Registry()) {
    if (info.name == name) return info;
  }
  std::string known;
  for (const std::string& n : KnownDatasets()) known += (known.empty() ? "" : ", ") + n;
  return absl::InvalidArgumentError("unknown dataset '" + name + "' (known: " + known + ")");
}

std::vector<std::string> KnownDatasets() {
  std::vector<std::string> names;
  for (const DatasetInfo& info : Registry()) names.push_back(info.name);
  return names;
}

absl::StatusOr<DatasetInfo> DescribeDataset(const std::string& name, const std::string& data_dir) {
  MOA_ASSIGN_OR_RETURN(DatasetInfo info, LookupDataset(name));
  if (info.num_classes > 0 && !info.environments.empty()) return info;
  MOA_ASSIGN_OR_RETURN(FolderLayout layout, ScanDatasetFolder(info, data_dir));
  info.num_classes = static_cast<int64_t>(layout.classes.size());
  for (const FolderEnvironment& env : layout.environments) info.environments.push_back(env.name);
  return info;
}

absl::StatusOr<std::vector<std::string>> DatasetClassNames(const std::string& name,
                                                           const std::string& data_dir) {
  MOA_ASSIGN_OR_RETURN(DatasetInfo info, LookupDataset(name));
  if (name.find("FashionMNIST") != std::string::npos) {
    return std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  }
  if (name.find("MNIST") != std::string::npos) {
    std::vector<std::string> digits;
    for (int d = 0; d < 10; ++d) digits.push_back(std::to_string(d));
    return digits;
  }
  MOA_ASSIGN_OR_RETURN(FolderLayout layout, ScanDatasetFolder(info, data_dir));
  return layout.classes;
}

absl::Status CompleteInfo(const DomainDataset& dataset, const std::vector<int64_t>& test_envs,
                          DatasetInfo* info) {
  if (info->num_classes == 0) info->num_classes = dataset.num_classes;
  if (info->environments.empty()) {
    for (const Domain& domain : dataset.domains) info->environments.push_back(domain.name);
  }
  const int64_t n_env = static_cast<int64_t>(dataset.domains.size());
  for (int64_t t : test_envs) {
    if (t < 0 || t >= n_env) {
      return absl::InvalidArgumentError("data.test_envs names environment " + std::to_string(t) +
                                        ", but " + dataset.name + " has environments 0 to " +
                                        std::to_string(n_env - 1));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<IdxSource> ParseIdxSource(const std::string& text) {
  if (text == "all") return IdxSource::kAll;
  if (text == "train") return IdxSource::kTrain;
  if (text == "test") return IdxSource::kTest;
  return absl::InvalidArgumentError("data.source must be all, train or test, not '" + text + "'");
}

std::vector<Domain> BuildRotatedDomains(const torch::Tensor& images, const torch::Tensor& labels,
                                        const std::vector<double>& angles, int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  const torch::Tensor shuffle = torch::randperm(images.size(0), torch::kInt64);
  const torch::Tensor shuffled_images = images.index_select(0, shuffle);
  const torch::Tensor shuffled_labels = labels.index_select(0, shuffle);
  const int64_t n_env = static_cast<int64_t>(angles.size());
  std::vector<Domain> domains;
  for (int64_t i = 0; i < n_env; ++i) {
    using torch::indexing::Slice;
    Domain domain;
    char name[32];
    std::snprintf(name, sizeof(name), "%g", angles[i]);
    domain.name = name;
    const torch::Tensor env_images =
        shuffled_images.index({Slice(i, torch::indexing::None, n_env)});
    domain.labels = shuffled_labels.index({Slice(i, torch::indexing::None, n_env)}).contiguous();
    domain.images =
        RotateLikePil(env_images, angles[i]).unsqueeze(1).to(torch::kFloat32).div_(255.0);
    domains.push_back(std::move(domain));
  }
  return domains;
}

absl::StatusOr<DomainDataset> LoadDataset(const LoadOptions& options) {
  MOA_ASSIGN_OR_RETURN(DatasetInfo info, LookupDataset(options.dataset));
  DomainDataset dataset;
  if (info.channels == 3) {
    MOA_ASSIGN_OR_RETURN(dataset, LoadImageFolder(options, info));
    SplitDomains(options, &dataset);
    return dataset;
  }
  std::string dir = options.data_dir;
  if (dir.empty()) {
    if (!IsFashion(options.dataset)) {
      return absl::InvalidArgumentError("data.data_dir must name the folder with the " +
                                        options.dataset + " IDX files");
    }
    dir = kDebianFashionMnistDir;
  }
  torch::Tensor images, labels;
  if (options.source != IdxSource::kTest) {
    MOA_ASSIGN_OR_RETURN(IdxPair train, ReadIdxPair(dir, "train", info));
    images = train.images;
    labels = train.labels;
  }
  if (options.source != IdxSource::kTrain) {
    MOA_ASSIGN_OR_RETURN(IdxPair test, ReadIdxPair(dir, "t10k", info));
    images = images.defined() ? torch::cat({images, test.images}) : test.images;
    labels = labels.defined() ? torch::cat({labels, test.labels}) : test.labels;
  }

  dataset.name = options.dataset;
  dataset.num_classes = info.num_classes;
  dataset.channels = 1;
  dataset.height = images.size(1);
  dataset.width = images.size(2);
  if (info.environments.size() == 1) {
    Domain domain;
    domain.name = info.environments[0];
    domain.images = images.unsqueeze(1).to(torch::kFloat32).div_(255.0);
    domain.labels = labels;
    dataset.domains.push_back(std::move(domain));
  } else {
    std::vector<double> angles;
    for (const std::string& env : info.environments) angles.push_back(std::stod(env));
    dataset.domains = BuildRotatedDomains(images, labels, angles, options.seed);
  }
  for (Domain& domain : dataset.domains) {
    if (options.max_per_domain > 0 && domain.images.size(0) > options.max_per_domain) {
      domain.images = domain.images.narrow(0, 0, options.max_per_domain).contiguous();
      domain.labels = domain.labels.narrow(0, 0, options.max_per_domain).contiguous();
    }
  }
  SplitDomains(options, &dataset);
  return dataset;
}

}  // namespace moa::data
