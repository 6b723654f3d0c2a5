// Decoding and transforms against PIL and torchvision on PIL images (tests/python/
// pil_reference.py, Debian's python3-pil and python3-torchvision) on real JPEG and PNG files
// written at test time, errors for corrupt files and for headers announcing more pixels than PIL
// opens, and the augmentation's random parameters against the distributions torchvision draws
// them from.
#include <zlib.h>

#include <cmath>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/safetensors.h"
#include "common/splitmix.h"
#include "data/image_io.h"
#include "data/transforms.h"
#include "tests/data/image_fixtures.h"
#include "tests/support/test_support.h"

namespace moa::data {
namespace {

using data::test::Pattern;
using data::test::ToRgb;
using data::test::WriteImage;

torch::Tensor AsTensor(const RgbImage& image) {
  return torch::from_blob(const_cast<uint8_t*>(image.pixels.data()), {image.height, image.width, 3},
                          torch::kUInt8)
      .clone();
}

// Runs the Python reference on `jobs` and returns its tensors by job name.
std::map<std::string, torch::Tensor> Reference(const moa::test::TempDir& dir,
                                               const nlohmann::json& jobs) {
  const std::string jobs_path = dir.File("jobs.json");
  const std::string out_path = dir.File("reference.safetensors");
  EXPECT_TRUE(WriteFileAtomically(jobs_path, jobs.dump()).ok());
  if (moa::test::RunPython("pil_reference.py", jobs_path + " " + out_path) != 0) return {};
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(out_path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return {};
  return std::map<std::string, torch::Tensor>(file->tensors.begin(), file->tensors.end());
}

int64_t MaxLevelDifference(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 256;
  return (a.to(torch::kInt32) - b.to(torch::kInt32)).abs().max().item<int64_t>();
}

// The names `moa predict` picks from a folder: what the decoder reads, in any case.
TEST(ImageDecodeTest, DecodableExtensionsAreJpegAndPngInAnyCase) {
  for (const char* name : {"a.jpg", "b.JPEG", "c.Png", "dir.x/d.jpeg"}) {
    EXPECT_TRUE(HasDecodableImageExtension(name)) << name;
  }
  for (const char* name : {"e.webp", "f.bmp", "jpg", "g.jpg.txt", "h.", "dir.png/i"}) {
    EXPECT_FALSE(HasDecodableImageExtension(name)) << name;
  }
}

TEST(ImageDecodeTest, EveryColourTypeDecodesAsPilConvertsToRgb) {
  moa::test::TempDir dir;
  // name -> (file, raw image, PNG bit depth)
  struct Case {
    std::string file;
    RawImage raw;
    int bit_depth;
  };
  const std::vector<Case> cases = {
      {"rgb.jpg", Pattern(37, 29, 3, 1), 8},   {"gray.jpg", Pattern(33, 20, 1, 2), 8},
      {"cmyk.jpg", Pattern(25, 31, 4, 3), 8},  {"rgb.png", Pattern(19, 23, 3, 4), 8},
      {"rgba.png", Pattern(21, 17, 4, 5), 8},  {"gray.png", Pattern(15, 16, 1, 6), 8},
      {"graya.png", Pattern(14, 13, 2, 7), 8}, {"rgb16.png", Pattern(12, 11, 3, 8), 16},
  };
  nlohmann::json jobs = nlohmann::json::array();
  for (const Case& c : cases) {
    WriteImage(dir.File(c.file), c.raw, c.bit_depth);
    jobs.push_back({{"name", c.file}, {"path", dir.File(c.file)}, {"op", "decode"}});
  }
  const auto reference = Reference(dir, jobs);
  ASSERT_EQ(reference.size(), cases.size());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    MOA_ASSERT_OK_AND_ASSIGN(RgbImage image, DecodeImageFile(dir.File(c.file)));
    EXPECT_EQ(image.width, c.raw.width);
    EXPECT_EQ(image.height, c.raw.height);
    // The same libjpeg-turbo and the same conversions: identical bytes.
    EXPECT_EQ(MaxLevelDifference(AsTensor(image), reference.at(c.file)), 0);
  }
}

TEST(ImageDecodeTest, SixteenBitGrayKeepsTheHighByteAndPngsAreLossless) {
  moa::test::TempDir dir;
  const RawImage raw = Pattern(9, 7, 1, 11);
  WriteImage(dir.File("gray16.png"), raw, 16);  // samples v * 257
  WriteImage(dir.File("rgb.png"), Pattern(9, 7, 3, 12));
  MOA_ASSERT_OK_AND_ASSIGN(RgbImage gray, DecodeImageFile(dir.File("gray16.png")));
  MOA_ASSERT_OK_AND_ASSIGN(RgbImage rgb, DecodeImageFile(dir.File("rgb.png")));
  for (size_t i = 0; i < raw.samples.size(); ++i) {
    ASSERT_EQ(gray.pixels[3 * i], raw.samples[i]);
    ASSERT_EQ(gray.pixels[3 * i + 2], raw.samples[i]);
  }
  EXPECT_EQ(rgb.pixels, Pattern(9, 7, 3, 12).samples);
}

TEST(ImageDecodeTest, CorruptFilesGiveErrorsNamingThem) {
  moa::test::TempDir dir;
  WriteImage(dir.File("good.jpg"), Pattern(40, 30, 3, 1));
  WriteImage(dir.File("good.png"), Pattern(40, 30, 3, 1));
  MOA_ASSERT_OK_AND_ASSIGN(std::string jpeg, ReadFile(dir.File("good.jpg")));
  MOA_ASSERT_OK_AND_ASSIGN(std::string png, ReadFile(dir.File("good.png")));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("cut.jpg"), jpeg.substr(0, jpeg.size() / 2)));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("cut.png"), png.substr(0, png.size() / 2)));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("text.jpg"), "not an image at all"));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("empty.png"), ""));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("header.jpg"), jpeg.substr(0, 40)));
  const std::map<std::string, std::string> expected = {
      {"cut.jpg", "truncated JPEG"},        {"cut.png", "corrupt PNG"},
      {"text.jpg", "neither JPEG nor PNG"}, {"empty.png", "empty file"},
      {"header.jpg", "corrupt JPEG"},       {"missing.jpg", "missing.jpg"}};
  for (const auto& [file, words] : expected) {
    SCOPED_TRACE(file);
    const absl::Status status = DecodeImageFile(dir.File(file)).status();
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find(dir.File(file)), std::string::npos) << status;
    EXPECT_NE(status.message().find(words), std::string::npos) << status;
  }
  // The header alone of a truncated JPEG is intact.
  MOA_ASSERT_OK_AND_ASSIGN(ImageHeader header, ReadImageHeader(dir.File("cut.jpg")));
  EXPECT_EQ(header.format, ImageFormat::kJpeg);
  EXPECT_EQ(header.width, 40);
  EXPECT_EQ(header.height, 30);
  EXPECT_FALSE(ReadImageHeader(dir.File("text.jpg")).ok());
}

// Writes `value` big-endian into bytes [at, at + 4) of `bytes`.
void PutBigEndian32(std::string& bytes, size_t at, uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>((value >> (24 - 8 * i)) & 0xff);
}

TEST(ImageDecodeTest, ImagesLargerThanPilOpensAreRefusedFromTheHeader) {
  // Small files whose headers announce 20000 x 20000 pixels, over PIL's 178956970: refused before
  // 1.2 GB of pixels are allocated for data that is not there.
  moa::test::TempDir dir;
  MOA_ASSERT_OK_AND_ASSIGN(std::string jpeg, EncodeJpeg(Pattern(16, 16, 3, 1), 90));
  const size_t frame = jpeg.find("\xff\xc0");  // SOF0: length, precision, height, width
  ASSERT_NE(frame, std::string::npos);
  for (const size_t at : {frame + 5, frame + 7}) {
    jpeg[at] = static_cast<char>(20000 >> 8);
    jpeg[at + 1] = static_cast<char>(20000 & 0xff);
  }
  MOA_ASSERT_OK_AND_ASSIGN(std::string png, EncodePng(Pattern(16, 16, 3, 1)));
  PutBigEndian32(png, 16, 20000);  // IHDR's width and height, then its CRC over type and data
  PutBigEndian32(png, 20, 20000);
  PutBigEndian32(png, 29, crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("huge.jpg"), jpeg));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("huge.png"), png));
  for (const std::string file : {"huge.jpg", "huge.png"}) {
    SCOPED_TRACE(file);
    for (const absl::Status& status :
         {DecodeImageFile(dir.File(file)).status(), ReadImageHeader(dir.File(file)).status()}) {
      EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
      EXPECT_NE(status.message().find(dir.File(file)), std::string::npos) << status;
      EXPECT_NE(status.message().find("20000 x 20000"), std::string::npos) << status;
    }
  }
}

TEST(ImageDecodeTest, HeaderBehindLargeMetadataIsRead) {
  moa::test::TempDir dir;
  MOA_ASSERT_OK_AND_ASSIGN(std::string jpeg, EncodeJpeg(Pattern(30, 20, 3, 3), 90));
  // Two 60000-byte comment segments right after SOI push the frame header past 64 KiB.
  std::string comments;
  for (int i = 0; i < 2; ++i) {
    const int length = 60002;  // the length field counts itself
    comments += std::string("\xFF\xFE", 2) + static_cast<char>(length >> 8) +
                static_cast<char>(length & 0xFF) + std::string(60000, 'x');
  }
  MOA_ASSERT_OK(
      WriteFileAtomically(dir.File("meta.jpg"), jpeg.substr(0, 2) + comments + jpeg.substr(2)));
  MOA_ASSERT_OK_AND_ASSIGN(ImageHeader header, ReadImageHeader(dir.File("meta.jpg")));
  EXPECT_EQ(header.width, 30);
  EXPECT_EQ(header.height, 20);
  MOA_ASSERT_OK_AND_ASSIGN(RgbImage image, DecodeImageFile(dir.File("meta.jpg")));
  MOA_ASSERT_OK_AND_ASSIGN(RgbImage plain, DecodeImage(jpeg, "plain"));
  EXPECT_EQ(image.pixels, plain.pixels);
}

// Geometry: the implementation follows Pillow's fixed-point arithmetic, so the bytes agree (the
// issue allowed 2 levels of 255; a rounding change in the resampler moves many pixels by one).
constexpr int64_t kGeometryLevels = 0;
// Colour: the same float and double expressions as Pillow in the same order, so the bytes agree;
// the stated tolerance is exact.
constexpr int64_t kColourLevels = 0;

TEST(TransformParityTest, ResizeCropAndFlipMatchTorchvision) {
  moa::test::TempDir dir;
  const std::string path = dir.File("photo.png");
  const RawImage raw = Pattern(83, 61, 3, 21);
  WriteImage(path, raw);
  const RgbImage image = ToRgb(raw);
  struct Crop {
    std::string name;
    CropBox box;
    int size;
  };
  const std::vector<Crop> crops = {
      {"downscale", {3, 5, 70, 52}, 24}, {"upscale", {10, 7, 20, 15}, 56},
      {"aspect", {0, 0, 83, 40}, 32},    {"whole", {0, 0, 83, 61}, 224},
      {"identity", {11, 9, 32, 32}, 32}, {"sliver", {40, 2, 9, 57}, 31},
  };
  nlohmann::json jobs = nlohmann::json::array();
  for (const Crop& c : crops) {
    jobs.push_back({{"name", c.name},
                    {"path", path},
                    {"op", "resized_crop"},
                    {"top", c.box.top},
                    {"left", c.box.left},
                    {"height", c.box.height},
                    {"width", c.box.width},
                    {"size", c.size}});
  }
  jobs.push_back({{"name", "resize"}, {"path", path}, {"op", "resize"}, {"size", 40}});
  jobs.push_back({{"name", "hflip"}, {"path", path}, {"op", "hflip"}});
  const auto reference = Reference(dir, jobs);
  ASSERT_EQ(reference.size(), jobs.size());
  for (const Crop& c : crops) {
    SCOPED_TRACE(c.name);
    EXPECT_LE(MaxLevelDifference(AsTensor(ResizeLikePil(image, c.box, c.size, c.size)),
                                 reference.at(c.name)),
              kGeometryLevels);
  }
  EXPECT_LE(MaxLevelDifference(AsTensor(ResizeLikePil(image, {0, 0, 83, 61}, 40, 40)),
                               reference.at("resize")),
            kGeometryLevels);
  RgbImage flipped = image;
  FlipHorizontal(&flipped);
  EXPECT_EQ(MaxLevelDifference(AsTensor(flipped), reference.at("hflip")), 0);
}

// Uniformly random colours: every branch of the HSV conversions.
RawImage Noise(int width, int height, uint64_t seed) {
  RawImage image = Pattern(width, height, 3, seed);
  uint64_t state = seed;
  for (uint8_t& v : image.samples) v = static_cast<uint8_t>((state = SplitMix64(state)) >> 56);
  return image;
}

TEST(TransformParityTest, ColourOperationsMatchTorchvision) {
  moa::test::TempDir dir;
  const std::vector<std::string> paths = {dir.File("photo.png"), dir.File("noise.png")};
  const std::vector<RawImage> raws = {Pattern(48, 40, 3, 31), Noise(128, 96, 32)};
  for (size_t i = 0; i < raws.size(); ++i) WriteImage(paths[i], raws[i]);
  struct Op {
    std::string op;
    double factor;
    void (*apply)(RgbImage*, double);
  };
  const std::vector<Op> ops = {
      {"brightness", 0.7, AdjustBrightness},
      {"brightness", 1.0, AdjustBrightness},
      {"brightness", 1.29, AdjustBrightness},
      {"contrast", 0.72, AdjustContrast},
      {"contrast", 1.3, AdjustContrast},
      {"saturation", 0.71, AdjustSaturation},
      {"saturation", 1.27, AdjustSaturation},
      {"hue", -0.3, AdjustHue},
      {"hue", -0.013, AdjustHue},
      {"hue", 0.0, AdjustHue},
      {"hue", 0.11, AdjustHue},
      {"hue", 0.299, AdjustHue},
  };
  nlohmann::json jobs = nlohmann::json::array();
  for (size_t p = 0; p < paths.size(); ++p) {
    for (size_t i = 0; i < ops.size(); ++i) {
      jobs.push_back({{"name", std::to_string(p) + "_" + std::to_string(i)},
                      {"path", paths[p]},
                      {"op", ops[i].op},
                      {"factor", ops[i].factor}});
    }
    jobs.push_back(
        {{"name", std::to_string(p) + "_gray"}, {"path", paths[p]}, {"op", "grayscale"}});
  }
  const auto reference = Reference(dir, jobs);
  ASSERT_EQ(reference.size(), jobs.size());
  for (size_t p = 0; p < paths.size(); ++p) {
    const RgbImage image = ToRgb(raws[p]);
    for (size_t i = 0; i < ops.size(); ++i) {
      SCOPED_TRACE(paths[p] + ": " + ops[i].op + " " + std::to_string(ops[i].factor));
      RgbImage out = image;
      ops[i].apply(&out, ops[i].factor);
      EXPECT_LE(MaxLevelDifference(AsTensor(out),
                                   reference.at(std::to_string(p) + "_" + std::to_string(i))),
                kColourLevels);
    }
    RgbImage gray = image;
    ToGrayscale(&gray);
    EXPECT_EQ(MaxLevelDifference(AsTensor(gray), reference.at(std::to_string(p) + "_gray")), 0);
  }
}

TEST(TransformParityTest, WholeTrainingAndEvaluationTransformsMatchTorchvision) {
  moa::test::TempDir dir;
  const std::string path = dir.File("photo.jpg");
  WriteImage(path, Pattern(97, 71, 3, 41));
  MOA_ASSERT_OK_AND_ASSIGN(RgbImage image, DecodeImageFile(path));
  const int size = 48;
  std::vector<AugmentParams> cases;
  for (uint64_t k = 0; k < 6; ++k) {
    AugmentParams p = SampleAugment({99, k}, image.width, image.height);
    p.flip = k % 2 == 1;
    p.grayscale = k == 4;
    cases.push_back(p);
  }
  nlohmann::json jobs = nlohmann::json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    const AugmentParams& p = cases[i];
    jobs.push_back({{"name", "train" + std::to_string(i)},
                    {"path", path},
                    {"op", "train"},
                    {"top", p.crop.top},
                    {"left", p.crop.left},
                    {"height", p.crop.height},
                    {"width", p.crop.width},
                    {"size", size},
                    {"flip", p.flip},
                    {"order", p.jitter.order},
                    {"brightness", p.jitter.brightness},
                    {"contrast", p.jitter.contrast},
                    {"saturation", p.jitter.saturation},
                    {"hue", p.jitter.hue},
                    {"grayscale", p.grayscale}});
  }
  jobs.push_back({{"name", "eval"}, {"path", path}, {"op", "eval"}, {"size", 224}});
  const auto reference = Reference(dir, jobs);
  ASSERT_EQ(reference.size(), jobs.size());
  // One level of 255 after normalisation; float rounding of the normalisation on top.
  const double one_level = 1.0 / 255.0 / kClipStd[1];
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    torch::Tensor out = torch::empty({3, size, size});
    TrainTransform(image, cases[i], size, out.data_ptr<float>());
    const double diff =
        (out - reference.at("train" + std::to_string(i))).abs().max().item<double>();
    EXPECT_LE(diff, kGeometryLevels * one_level + 1e-5) << diff * 255 * kClipStd[1] << " levels";
  }
  torch::Tensor eval = torch::empty({3, 224, 224});
  EvalTransform(image, 224, eval.data_ptr<float>());
  EXPECT_LE((eval - reference.at("eval")).abs().max().item<double>(), 1e-6);
}

// The probability that one try of RandomResizedCrop.get_params fits a square image, as a function
// of the scale s: the log-ratio, uniform on [log 3/4, log 4/3], must lie in [log s, -log s].
double FitProbability(double s) {
  const double half_range = std::log(4.0 / 3.0);
  return std::min(1.0, -std::log(s) / half_range);
}

TEST(AugmentStatisticsTest, RatesAndCropScalesFollowTorchvisionsDistributions) {
  const int kDraws = 20000;
  const int side = 1000;
  int flips = 0, grays = 0, small = 0;
  double scale_sum = 0, hue_sum = 0, brightness_sum = 0;
  std::map<std::array<int, 4>, int> orders;
  for (int i = 0; i < kDraws; ++i) {
    const AugmentParams p = SampleAugment({7, static_cast<uint64_t>(i), 3}, side, side);
    ASSERT_GE(p.crop.left, 0);
    ASSERT_LE(p.crop.left + p.crop.width, side);
    ASSERT_LE(p.crop.top + p.crop.height, side);
    const double ratio = static_cast<double>(p.crop.width) / p.crop.height;
    ASSERT_GE(ratio, 0.75 - 0.01);
    ASSERT_LE(ratio, 4.0 / 3.0 + 0.01);
    const double scale = static_cast<double>(p.crop.width) * p.crop.height / (side * side);
    scale_sum += scale;
    small += scale < 0.75;
    flips += p.flip;
    grays += p.grayscale;
    hue_sum += p.jitter.hue;
    brightness_sum += p.jitter.brightness;
    ++orders[p.jitter.order];
    ASSERT_GE(p.jitter.hue, -0.3);
    ASSERT_LT(p.jitter.hue, 0.3);
  }
  auto within = [&](double observed, double p, const char* what) {
    const double sigma = std::sqrt(p * (1 - p) / kDraws);
    EXPECT_NEAR(observed, p, 5 * sigma) << what;
  };
  within(static_cast<double>(flips) / kDraws, 0.5, "flip rate");
  within(static_cast<double>(grays) / kDraws, 0.1, "grayscale rate");
  EXPECT_EQ(orders.size(), 24u);
  for (const auto& [order, count] : orders)
    within(static_cast<double>(count) / kDraws, 1.0 / 24, "order");
  // Uniform factors: mean within 5 standard errors (sd of U(a, b) = (b - a) / sqrt(12)).
  EXPECT_NEAR(hue_sum / kDraws, 0.0, 5 * 0.6 / std::sqrt(12.0 * kDraws));
  EXPECT_NEAR(brightness_sum / kDraws, 1.0, 5 * 0.6 / std::sqrt(12.0 * kDraws));

  // Crop scale: a try fits with probability q(s); the first fitting try's scale has density
  // proportional to q(s) on [0.7, 1]; after 10 failed tries the whole image (scale 1) is used.
  const int steps = 30000;
  double fit = 0, fit_scale = 0, fit_small = 0;
  for (int k = 0; k < steps; ++k) {
    const double s = 0.7 + 0.3 * (k + 0.5) / steps;
    const double q = FitProbability(s) / steps;
    fit += q;
    fit_scale += q * s;
    if (s < 0.75) fit_small += q;
  }
  const double fallback = std::pow(1 - fit, 10);
  const double mean_scale = (1 - fallback) * fit_scale / fit + fallback;
  const double small_rate = (1 - fallback) * fit_small / fit;
  EXPECT_NEAR(scale_sum / kDraws, mean_scale, 5 * 0.09 / std::sqrt(kDraws) + 1e-3);
  within(static_cast<double>(small) / kDraws, small_rate, "share of crops below 0.75");
}

TEST(AugmentStatisticsTest, ParametersAreKeyedAndCentralCropIsTheFallback) {
  const AugmentParams a = SampleAugment({1, 2, 3, 4}, 500, 400);
  const AugmentParams b = SampleAugment({1, 2, 3, 4}, 500, 400);
  const AugmentParams c = SampleAugment({1, 2, 3, 5}, 500, 400);
  EXPECT_EQ(a.crop.left, b.crop.left);
  EXPECT_EQ(a.jitter.hue, b.jitter.hue);
  EXPECT_NE(a.jitter.hue, c.jitter.hue);
  // A 1 x 20 strip: no try fits the ratio, so torchvision's central crop of ratio 4/3 at most.
  const AugmentParams strip = SampleAugment({5}, 20, 1);
  EXPECT_EQ(strip.crop.height, 1);
  EXPECT_EQ(strip.crop.width, 1);
  EXPECT_EQ(strip.crop.left, (20 - 1) / 2);
}

}  // namespace
}  // namespace moa::data
