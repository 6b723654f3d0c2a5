// `moa predict`: classifies image files with trained adapters (one checkpoint, or an ensemble
// whose logits are averaged as `moa eval` does) and writes one CSV row per image with its top-k
// classes and probabilities (and, on request, every logit). Under mpirun each rank classifies
// every size-th image and rank 0 writes the file; images that fail to decode are named and
// skipped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "parallel/communicator.h"
#include "trainer/config.h"

namespace moa::trainer {

struct PredictOptions {
  std::vector<std::string> adapters;
  /// A folder (searched recursively for .jpg, .jpeg and .png files) or a text file that lists
  /// one image path per line (blank lines and lines starting with # are ignored).
  std::string images;
  std::string output;  // the CSV file, written atomically by rank 0
  int64_t top_k = 5;
  bool logits = false;  // one `logit:<class>` column per class
};

struct PredictSummary {
  int64_t images = 0;  // listed
  int64_t failed = 0;  // skipped because they could not be read or decoded
};

/// The image files `images` names, in order (a folder's sorted by path); an error when there is
/// none or the path does not exist.
absl::StatusOr<std::vector<std::string>> ListImages(const std::string& images);

/// One image file as the model's input, written to `out` (channels x size x size floats): the
/// evaluation transform (resize, centre crop, ImageNet normalisation) for three channels; for one
/// channel (the MNIST family, grey levels in [0, 1]) the whole image resized and converted to
/// grey as PIL's "L" mode does.
absl::Status PrepareImage(const std::string& path, int64_t channels, int64_t size, float* out);

/// Classifies the listed images with `options.adapters` on the configured model and writes the
/// CSV (rank 0). Every rank of `world` must call it.
absl::StatusOr<PredictSummary> Predict(const RunConfig& config, const PredictOptions& options,
                                       parallel::Communicator& world);

}  // namespace moa::trainer
