// RotatedFashionMNIST and the in/out splits against DomainBed's construction, computed by the
// independent Python reference (python3-torch, torchvision rotating PIL images, numpy's legacy
// shuffle, hashlib's md5).
#include <algorithm>

#include "common/safetensors.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/rotate.h"
#include "data/splits.h"
#include "tests/support/test_support.h"

namespace moa::data {
namespace {

constexpr int kCount = 48;

struct Case {
  const char* source;
  int seed;
  int trial_seed;
};

class RotatedDomainsTest : public ::testing::TestWithParam<Case> {};

TEST_P(RotatedDomainsTest, MatchesDomainBedConstruction) {
  const Case c = GetParam();
  test::TempDir dir;
  const std::string ref_path = dir.File("ref.safetensors");
  ASSERT_EQ(test::RunPython("rotated_domains.py", std::string(kDebianFashionMnistDir) + " " +
                                                      c.source + " " + std::to_string(c.seed) +
                                                      " " + std::to_string(c.trial_seed) + " " +
                                                      std::to_string(kCount) + " " + ref_path),
            0);
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile ref, ReadSafetensors(ref_path));

  LoadOptions options;
  options.dataset = "RotatedFashionMNIST";
  MOA_ASSERT_OK_AND_ASSIGN(options.source, ParseIdxSource(c.source));
  options.seed = c.seed;
  options.trial_seed = c.trial_seed;
  MOA_ASSERT_OK_AND_ASSIGN(DomainDataset dataset, LoadDataset(options));
  ASSERT_EQ(dataset.domains.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    SCOPED_TRACE("domain " + std::to_string(i));
    const Domain& d = dataset.domains[i];
    const std::string env = "env" + std::to_string(i);
    EXPECT_EQ(d.images.size(0), ref.tensors.at(env + "_size").item<int64_t>());
    const torch::Tensor mine = d.images.narrow(0, 0, kCount);
    const torch::Tensor theirs = ref.tensors.at(env + "_images");
    const double max_diff = (mine - theirs).abs().max().item<double>();
    // Bit for bit: both sides divide the same bytes by 255 in float32. (With the rotation matrix
    // rounded one unit of its 15th digit off, 3 to 13 pixels in 48 x 6 images were one level off.)
    const int64_t differing = (mine - theirs).abs().gt(0.5 / 255).sum().item<int64_t>();
    EXPECT_EQ(max_diff, 0.0) << "rotation differs from torchvision by " << max_diff * 255
                             << "/255 at most, in " << differing << " pixels";
    EXPECT_TRUE(torch::equal(d.labels.narrow(0, 0, kCount), ref.tensors.at(env + "_labels")));
    EXPECT_EQ(SeedHash(c.trial_seed, i),
              static_cast<uint32_t>(ref.tensors.at(env + "_seed_hash").item<int64_t>()));
    const torch::Tensor out = ref.tensors.at(env + "_out");
    ASSERT_EQ(static_cast<int64_t>(d.out.size()), out.size(0));
    EXPECT_TRUE(torch::equal(torch::tensor(d.out, torch::kInt64), out))
        << "out split differs from numpy's";
    // `in` is the rest of the shuffled keys: disjoint from `out`, together everything.
    std::vector<int64_t> all = d.in;
    all.insert(all.end(), d.out.begin(), d.out.end());
    std::sort(all.begin(), all.end());
    ASSERT_EQ(static_cast<int64_t>(all.size()), d.images.size(0));
    for (int64_t k = 0; k < static_cast<int64_t>(all.size()); ++k) ASSERT_EQ(all[k], k);
  }
}

INSTANTIATE_TEST_SUITE_P(Sources, RotatedDomainsTest,
                         ::testing::Values(Case{"all", 0, 0}, Case{"train", 3, 1},
                                           Case{"test", 1, 2}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.source) + "_seed" +
                                  std::to_string(info.param.seed);
                         });

TEST(RotateTest, ZeroAngleIsIdentityAndNinetyIsExactTranspose) {
  torch::manual_seed(0);
  const torch::Tensor img = torch::randint(0, 256, {2, 28, 28}, torch::kUInt8);
  EXPECT_TRUE(torch::equal(RotateLikePil(img, 0), img));
  // A quarter turn on an even-sized grid maps pixel centres onto pixel centres exactly:
  // counter-clockwise rotation = transpose then flip rows.
  EXPECT_TRUE(torch::equal(RotateLikePil(img, 90), img.transpose(1, 2).flip({1})));
}

TEST(SplitsTest, HoldoutSizesAndDisjointness) {
  const InOutSplit split = SplitInOut(1001, 0.2, SeedHash(0, 3));
  EXPECT_EQ(split.out.size(), 200u);  // int(1001 * 0.2)
  EXPECT_EQ(split.in.size(), 801u);
  const InOutSplit again = SplitInOut(1001, 0.2, SeedHash(0, 3));
  EXPECT_EQ(split.out, again.out);
  EXPECT_NE(split.out, SplitInOut(1001, 0.2, SeedHash(1, 3)).out);
}

TEST(DatasetTest, UnknownDatasetAndMissingFolderAreClearErrors) {
  LoadOptions options;
  options.dataset = "NoSuchSet";
  auto result = LoadDataset(options);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("NoSuchSet"), std::string::npos);
  options.dataset = "RotatedMNIST";
  options.data_dir = "/nonexistent/mnist";
  result = LoadDataset(options);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("/nonexistent/mnist"), std::string::npos);
}

// IDX files that are well formed but not the MNIST family's (labels past 9, images not 28 x 28)
// are refused at load time, naming the file, instead of failing in the loss or being cropped by
// the patch embedding.
TEST(DatasetTest, IdxFilesOutsideTheMnistFamilyAreRefused) {
  test::TempDir dir;
  LoadOptions options;
  options.dataset = "RotatedMNIST";
  options.source = IdxSource::kTest;
  options.data_dir = dir.path();
  const std::string images = dir.File("t10k-images-idx3-ubyte");
  const std::string labels = dir.File("t10k-labels-idx1-ubyte");
  MOA_ASSERT_OK(WriteIdx(images, torch::zeros({4, 28, 28}, torch::kUInt8)));
  MOA_ASSERT_OK(WriteIdx(labels, torch::tensor({0, 1, 200, 3}, torch::kUInt8)));
  auto result = LoadDataset(options);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(labels + ": label 200"), std::string::npos)
      << result.status();
  MOA_ASSERT_OK(WriteIdx(labels, torch::tensor({0, 1, 9, 3}, torch::kUInt8)));
  MOA_ASSERT_OK(LoadDataset(options).status());
  MOA_ASSERT_OK(WriteIdx(images, torch::zeros({4, 32, 32}, torch::kUInt8)));
  result = LoadDataset(options);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(images + ": images are 32 x 32"), std::string::npos)
      << result.status();
}

TEST(DatasetTest, MaxPerDomainCapsEachDomain) {
  LoadOptions options;
  options.dataset = "RotatedFashionMNIST";
  options.source = IdxSource::kTest;
  options.max_per_domain = 50;
  MOA_ASSERT_OK_AND_ASSIGN(DomainDataset dataset, LoadDataset(options));
  for (const Domain& d : dataset.domains) {
    EXPECT_EQ(d.images.size(0), 50);
    EXPECT_EQ(d.out.size(), 10u);
    EXPECT_EQ(d.in.size(), 40u);
  }
}

}  // namespace
}  // namespace moa::data
