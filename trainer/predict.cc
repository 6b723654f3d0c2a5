// `moa predict`: listing the images, preparing each as the model's input, the ranks' shares of
// the logits summed onto rank 0, and the CSV.
#include "trainer/predict.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/files.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/threads.h"
#include "data/dataset.h"
#include "data/image_folder.h"
#include "data/image_io.h"
#include "data/transforms.h"
#include "parallel/device.h"
#include "parallel/mesh_layout.h"
#include "trainer/build.h"
#include "trainer/evaluate.h"

namespace moa::trainer {
namespace {

namespace fs = std::filesystem;

// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

std::string Number(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", value);
  return text;
}

std::string FormatCsv(const std::vector<std::string>& files,
                      const std::vector<std::string>& classes, const torch::Tensor& logits,
                      const torch::Tensor& decoded, int64_t top_k, bool with_logits) {
  std::string csv = "image";
  for (int64_t k = 1; k <= top_k; ++k) {
    csv += ",class_" + std::to_string(k) + ",prob_" + std::to_string(k);
  }
  if (with_logits) {
    for (const std::string& name : classes) csv += "," + CsvField("logit:" + name);
  }
  csv += "\n";
  const torch::Tensor probs = torch::softmax(logits.to(torch::kFloat64), 1);
  const auto [top_probs, top_ids] = probs.topk(top_k, 1);
  const auto ok = decoded.accessor<int64_t, 1>();
  const auto p = top_probs.accessor<double, 2>();
  const auto id = top_ids.accessor<int64_t, 2>();
  const auto z = logits.accessor<float, 2>();
  for (size_t i = 0; i < files.size(); ++i) {
    if (ok[i] == 0) continue;
    csv += CsvField(files[i]);
    for (int64_t k = 0; k < top_k; ++k) {
      csv += "," + CsvField(classes[id[i][k]]) + "," + Number(p[i][k]);
    }
    if (with_logits) {
      for (size_t c = 0; c < classes.size(); ++c) csv += "," + Number(z[i][c]);
    }
    csv += "\n";
  }
  return csv;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListImages(const std::string& images) {
  std::error_code error;
  std::vector<std::string> files;
  if (fs::is_directory(images, error)) {
    for (const auto& entry : fs::recursive_directory_iterator(images, error)) {
      if (entry.is_regular_file() &&
          data::HasDecodableImageExtension(entry.path().filename().string())) {
        files.push_back(entry.path().string());
      }
    }
    if (error) return absl::UnavailableError("cannot list " + images + ": " + error.message());
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      return absl::InvalidArgumentError(images + " holds no .jpg, .jpeg or .png file");
    }
    return files;
  }
  if (!fs::exists(images, error)) {
    return absl::NotFoundError("--images " + images +
                               ": no such folder or list file (a folder of images, or a text "
                               "file with one image path per line)");
  }
  MOA_ASSIGN_OR_RETURN(const std::string list, ReadFile(images));
  size_t start = 0;
  while (start < list.size()) {
    size_t end = list.find('\n', start);
    if (end == std::string::npos) end = list.size();
    std::string line = list.substr(start, end - start);
    start = end + 1;
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    files.push_back(line);
  }
  if (files.empty()) return absl::InvalidArgumentError("the list " + images + " names no image");
  return files;
}

absl::Status PrepareImage(const std::string& path, int64_t channels, int64_t size, float* out) {
  MOA_ASSIGN_OR_RETURN(const data::RgbImage image, data::DecodeImageFile(path));
  if (channels == 3) {
    data::EvalTransform(image, static_cast<int>(size), out);
    return absl::OkStatus();
  }
  if (channels != 1) {
    return absl::InvalidArgumentError("models with " + std::to_string(channels) +
                                      " input channels take no image files");
  }
  const int side = static_cast<int>(size);
  data::RgbImage resized =
      data::ResizeLikePil(image, data::CropBox{0, 0, image.width, image.height}, side, side);
  data::ToGrayscale(&resized);  // PIL's "L" conversion, in all three channels
  for (int64_t i = 0; i < size * size; ++i) {
    out[i] = static_cast<float>(resized.pixels[3 * i]) / 255.0f;
  }
  return absl::OkStatus();
}

absl::StatusOr<PredictSummary> Predict(const RunConfig& config, const PredictOptions& options,
                                       parallel::Communicator& world) {
  if (options.adapters.empty()) {
    return absl::InvalidArgumentError("predicting needs adapters (--adapters FILE [FILE ...])");
  }
  if (options.output.empty()) return absl::InvalidArgumentError("predicting needs --output FILE");
  MOA_ASSIGN_OR_RETURN(const std::vector<std::string> files, ListImages(options.images));
  MOA_ASSIGN_OR_RETURN(const data::DatasetInfo info, ModelDatasetInfo(config));
  MOA_ASSIGN_OR_RETURN(const std::vector<std::string> classes,
                       data::DatasetClassNames(config.data.dataset, config.data.data_dir));
  if (static_cast<int64_t>(classes.size()) != info.num_classes) {
    return absl::InvalidArgumentError("the model has " + std::to_string(info.num_classes) +
                                      " classes but " + config.data.dataset + " names " +
                                      std::to_string(classes.size()));
  }
  const int64_t top_k = std::min<int64_t>(options.top_k, info.num_classes);
  if (top_k < 1) return absl::InvalidArgumentError("--top_k must be at least 1");
  MOA_ASSIGN_OR_RETURN(const parallel::MeshLayout layout, parallel::DetectMeshLayout(0, 1));
  MOA_ASSIGN_OR_RETURN(const torch::Device device,
                       parallel::SelectDevice(config.parallel.device, layout));
  std::vector<std::shared_ptr<ClassifierImpl>> models;
  for (const std::string& path : options.adapters) {
    MOA_ASSIGN_OR_RETURN(auto model, ModelWithAdapters(config, info, path, device));
    models.push_back(model);
  }
  const std::string& method = config.adapter.method;
  const bool frozen_backbone = method == "lora" || method == "kadaptation" || method == "moa";

  const int64_t n = static_cast<int64_t>(files.size());
  const int64_t channels = info.channels, size = config.model.img_size;
  torch::Tensor logits = torch::zeros({n, info.num_classes}, torch::kFloat32);
  torch::Tensor decoded = torch::zeros({n}, torch::kInt64);
  std::vector<int64_t> mine;  // this rank's share: every size-th image
  for (int64_t i = world.rank(); i < n; i += world.size()) mine.push_back(i);
  const int64_t batch = std::max<int64_t>(1, config.eval.batch_size);
  // Decoding and the model take turns here, so by default decoding gets every core of the rank.
  const int workers =
      config.data.workers > 0
          ? static_cast<int>(config.data.workers)
          : ResolveThreadCount(0, static_cast<int>(std::max<int64_t>(1, layout.local_size)));
  torch::NoGradGuard no_grad;
  for (size_t begin = 0; begin < mine.size(); begin += batch) {
    const int64_t count = std::min<int64_t>(batch, static_cast<int64_t>(mine.size() - begin));
    torch::Tensor images = torch::empty({count, channels, size, size});
    std::vector<std::string> errors(count);
    data::ParallelFor(count, workers, [&](int64_t j) {
      const absl::Status prepared =
          PrepareImage(files[mine[begin + j]], channels, size, images[j].data_ptr<float>());
      if (!prepared.ok()) errors[j] = std::string(prepared.message());
    });
    std::vector<int64_t> rows, ids;
    for (int64_t j = 0; j < count; ++j) {
      if (errors[j].empty()) {
        rows.push_back(j);
        ids.push_back(mine[begin + j]);
      } else {
        Log(LogLevel::kWarning) << "skipped " << files[mine[begin + j]] << ": " << errors[j];
      }
    }
    if (rows.empty()) continue;
    const torch::Tensor index = torch::tensor(ids, torch::kInt64);
    const torch::Tensor scored = EnsembleLogits(
        models, images.index_select(0, torch::tensor(rows, torch::kInt64)).to(device),
        frozen_backbone);
    logits.index_copy_(0, index, scored.to(torch::kCPU, torch::kFloat32));
    decoded.index_fill_(0, index, 1);
  }
  // Each image's row is non-zero on one rank only: the sum gathers them.
  MOA_RETURN_IF_ERROR(world.AllReduce(logits, parallel::ReduceOp::kSum));
  MOA_RETURN_IF_ERROR(world.AllReduce(decoded, parallel::ReduceOp::kSum));
  PredictSummary summary;
  summary.images = n;
  summary.failed = n - decoded.sum().item<int64_t>();
  if (world.rank() == 0) {
    MOA_RETURN_IF_ERROR(WriteFileAtomically(
        options.output, FormatCsv(files, classes, logits, decoded, top_k, options.logits)));
  }
  return summary;
}

}  // namespace moa::trainer
