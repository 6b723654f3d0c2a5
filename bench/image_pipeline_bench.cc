// Input-pipeline throughput on 224 x 224 training batches: decode, augment and batch of JPEGs at
// typical DomainBed sizes (written by the benchmark, about 500 x 400), moa's stream against
// torchvision's DataLoader (bench/torchvision_pipeline.py, torchvision from scripts/setup.sh's
// environment) with the same number of workers, in the same run. Also times moa's stages alone
// (decode; decode + augment) on one thread.
//
// usage: image_pipeline_bench [--images N] [--workers W] [--steps S] [--batch B]
//   default: 192 images in 2 domains x 2 classes, W = 2 (both pipelines), 12 steps of 2 x 32.
#include <unistd.h>
#include <cstdio>
#include <cstdlib>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/bench_paths.h"
#include "common/files.h"
#include "common/splitmix.h"
#include "common/timer.h"
#include "data/dataset.h"
#include "data/image_io.h"
#include "data/stream.h"
#include "data/transforms.h"

namespace {

// A photo-like 500 x 400 image (varied per index so JPEG sizes vary as in real data): smooth
// shading, a few edges and fine texture.
moa::data::RawImage Photo(int index) {
  moa::data::RawImage image;
  image.width = 480 + index % 5 * 10;
  image.height = 380 + index % 3 * 20;
  image.channels = 3;
  image.samples.resize(static_cast<size_t>(image.width) * image.height * 3);
  uint64_t state = moa::SplitMix64(index);
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      for (int c = 0; c < 3; ++c) {
        state = moa::SplitMix64(state);
        const int shade = (x * (c + 1) + y * (3 - c) + index * 37) / 4 % 256;
        const int edge = ((x / 40 + y / 30 + index) % 3 == 0) ? 50 : 0;
        const int v = shade - edge + static_cast<int>(state % 24);
        image.samples[(static_cast<size_t>(y) * image.width + x) * 3 + c] =
            static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
      }
    }
  }
  return image;
}

int Arg(int argc, char** argv, const char* name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == name) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int n_images = Arg(argc, argv, "--images", 192);
  const int workers = Arg(argc, argv, "--workers", 2);
  const int steps = Arg(argc, argv, "--steps", 12);
  const int batch = Arg(argc, argv, "--batch", 32);
  const std::string root = std::filesystem::temp_directory_path().string() + "/moa_image_bench_" +
                           std::to_string(::getpid());
  std::vector<std::string> files;
  size_t bytes = 0;
  for (int i = 0; i < n_images; ++i) {
    const std::string dir =
        root + "/env" + std::to_string(i % 2) + "/class" + std::to_string(i / 2 % 2);
    if (!moa::MakeDirs(dir).ok()) return 1;
    auto jpeg = moa::data::EncodeJpeg(Photo(i), 90);
    const std::string path = dir + "/" + std::to_string(i) + ".jpg";
    if (!jpeg.ok() || !moa::WriteFileAtomically(path, *jpeg).ok()) return 1;
    bytes += jpeg->size();
    files.push_back(path);
  }
  std::printf(
      "%d JPEGs, about 500 x 400, mean %.0f KiB; %d workers per pipeline, %d steps of "
      "2 domains x %d\n",
      n_images, bytes / 1024.0 / n_images, workers, steps, batch);

  // Stages alone, one thread.
  const int single = std::min(n_images, 48);
  moa::Stopwatch decode_clock;
  std::vector<moa::data::RgbImage> decoded;
  for (int i = 0; i < single; ++i) decoded.push_back(*moa::data::DecodeImageFile(files[i]));
  const double decode_rate = single / decode_clock.Seconds();
  std::vector<float> out(3 * 224 * 224);
  moa::Stopwatch augment_clock;
  for (int i = 0; i < single; ++i) {
    const auto params = moa::data::SampleAugment({1, static_cast<uint64_t>(i)}, decoded[i].width,
                                                 decoded[i].height);
    moa::data::TrainTransform(decoded[i], params, 224, out.data());
  }
  const double augment_rate = single / augment_clock.Seconds();
  std::printf(
      "moa, 1 thread:  decode %.0f img/s, augment + normalise %.0f img/s, both %.0f img/s\n",
      decode_rate, augment_rate, 1.0 / (1.0 / decode_rate + 1.0 / augment_rate));

  // The whole stream: keyed draws, decode, augment, write into the batch.
  moa::data::LoadOptions load;
  load.dataset = "ImageFolder";
  load.data_dir = root;
  load.check = "none";
  auto dataset = moa::data::LoadDataset(load);
  if (!dataset.ok()) {
    std::fprintf(stderr, "%s\n", std::string(dataset.status().message()).c_str());
    return 1;
  }
  moa::data::StreamOptions options;
  options.train_domains = {0, 1};
  options.batch_size = batch;
  options.workers = workers;
  options.prefetch = 2;
  double moa_rate = 0;
  {
    moa::data::DomainStream stream(*dataset, options);
    stream.Next();  // start-up left out, as for torchvision
    moa::Stopwatch clock;
    int64_t images = 0;
    for (int s = 0; s < steps; ++s) images += stream.Next().images.size(0);
    moa_rate = images / clock.Seconds();
  }
  std::printf("moa stream:        %8.1f img/s  (%.1f per worker)\n", moa_rate, moa_rate / workers);

  // torchvision: one DataLoader per domain; `workers` processes in all, as moa's threads.
  const int per_domain = std::max(1, workers / 2);
  char command[1024];
  std::snprintf(command, sizeof(command), "%s %s/bench/torchvision_pipeline.py %s %d %d %d",
                moa::bench::PythonPath().c_str(), moa::bench::SourceDir().c_str(), root.c_str(),
                per_domain, batch, steps);
  double torch_rate = 0;
  if (FILE* pipe = popen(command, "r")) {
    if (std::fscanf(pipe, "%lf", &torch_rate) != 1) torch_rate = 0;
    pclose(pipe);
  }
  std::filesystem::remove_all(root);
  if (torch_rate <= 0) {
    std::fprintf(stderr, "the torchvision reference did not run: %s\n", command);
    return 1;
  }
  std::printf("torchvision:       %8.1f img/s  (%d worker processes, %d per domain)\n", torch_rate,
              2 * per_domain, per_domain);
  std::printf("ratio moa / torchvision: %.2fx per worker\n",
              (moa_rate / workers) / (torch_rate / (2 * per_domain)));
  return 0;
}
