// DomainBed's image-folder datasets on small trees of real JPEG and PNG files written at test
// time: layout and order as torchvision's ImageFolder, the start-of-run checks (missing
// environment or class folder, empty class, corrupt image, skipping), and the image stream and
// evaluation loader (keyed augmentation, independence from ranks, workers and resume).
#include <filesystem>

#include "common/files.h"
#include "data/dataset.h"
#include "data/image_folder.h"
#include "data/stream.h"
#include "data/transforms.h"
#include "tests/data/image_fixtures.h"
#include "tests/support/test_support.h"

namespace moa::data {
namespace {

using data::test::Pattern;
using data::test::WriteImage;

const std::vector<std::string> kPacsEnvironments = {"art_painting", "cartoon", "photo", "sketch"};
const std::vector<std::string> kPacsClasses = {"dog",   "elephant", "giraffe", "guitar",
                                               "horse", "house",    "person"};

void WritePacs(const std::string& data_dir, int per_class) {
  data::test::WriteImageFolder(data_dir + "/PACS", kPacsEnvironments, kPacsClasses, per_class);
}

LoadOptions PacsOptions(const std::string& data_dir) {
  LoadOptions options;
  options.dataset = "PACS";
  options.data_dir = data_dir;
  return options;
}

TEST(ImageFolderTest, PacsLayoutLoadsAsDomainBedSeesIt) {
  moa::test::TempDir dir;
  WritePacs(dir.path(), 3);
  // Files that are not images are ignored, nested folders are walked, as ImageFolder does.
  MOA_ASSERT_OK(WriteFileAtomically(dir.path() + "/PACS/photo/dog/notes.txt", "x"));
  MOA_ASSERT_OK(MakeDirs(dir.path() + "/PACS/photo/dog/more"));
  WriteImage(dir.path() + "/PACS/photo/dog/more/extra.JPG", Pattern(10, 10, 3, 99));
  MOA_ASSERT_OK_AND_ASSIGN(DomainDataset dataset, LoadDataset(PacsOptions(dir.path())));
  ASSERT_EQ(dataset.domains.size(), 4u);
  EXPECT_EQ(dataset.classes, kPacsClasses);
  EXPECT_EQ(dataset.num_classes, 7);
  for (size_t e = 0; e < 4; ++e) {
    const Domain& domain = dataset.domains[e];
    EXPECT_EQ(domain.name, kPacsEnvironments[e]);
    EXPECT_TRUE(domain.from_files());
    const int64_t n = e == 2 ? 22 : 21;
    ASSERT_EQ(domain.size(), n);
    ASSERT_EQ(static_cast<int64_t>(domain.files.size()), n);
    // holdout 0.2: floor(n / 5) out.
    EXPECT_EQ(static_cast<int64_t>(domain.out.size()), n / 5);
    EXPECT_EQ(static_cast<int64_t>(domain.in.size() + domain.out.size()), n);
  }
  const Domain& photo = dataset.domains[2];
  const std::string root = dir.path() + "/PACS/photo/";
  EXPECT_EQ(photo.files[0], root + "dog/img0.jpg");
  EXPECT_EQ(photo.files[1], root + "dog/img1.png");
  EXPECT_EQ(photo.files[3], root + "dog/more/extra.JPG");
  EXPECT_EQ(photo.files[4], root + "elephant/img0.png");
  EXPECT_EQ(photo.labels[3].item<int64_t>(), 0);
  EXPECT_EQ(photo.labels[4].item<int64_t>(), 1);
  EXPECT_EQ(photo.labels[21].item<int64_t>(), 6);
  // data_dir may also be the PACS folder itself.
  MOA_ASSERT_OK_AND_ASSIGN(DomainDataset direct, LoadDataset(PacsOptions(dir.path() + "/PACS")));
  EXPECT_EQ(direct.domains[2].files, photo.files);
}

TEST(ImageFolderTest, LayoutErrorsNameTheFoldersAtFault) {
  moa::test::TempDir dir;
  WritePacs(dir.path(), 1);
  const std::string root = dir.path() + "/PACS";
  std::filesystem::rename(root + "/sketch", dir.path() + "/sketch_moved");
  absl::Status missing_env = LoadDataset(PacsOptions(dir.path())).status();
  EXPECT_NE(missing_env.message().find("missing: sketch"), std::string::npos) << missing_env;
  std::filesystem::rename(dir.path() + "/sketch_moved", root + "/sketch");

  std::filesystem::remove_all(root + "/cartoon/horse");
  absl::Status missing_class = LoadDataset(PacsOptions(dir.path())).status();
  EXPECT_NE(missing_class.message().find(root + "/cartoon/horse"), std::string::npos)
      << missing_class;
  MOA_ASSERT_OK(MakeDirs(root + "/cartoon/horse"));
  absl::Status empty_class = LoadDataset(PacsOptions(dir.path())).status();
  EXPECT_NE(empty_class.message().find("without images"), std::string::npos) << empty_class;
  EXPECT_NE(empty_class.message().find(root + "/cartoon/horse"), std::string::npos) << empty_class;
  WriteImage(root + "/cartoon/horse/a.png", Pattern(8, 8, 3, 1));
  MOA_EXPECT_OK(LoadDataset(PacsOptions(dir.path())));

  MOA_ASSERT_OK(MakeDirs(root + "/photo/zebra"));
  WriteImage(root + "/photo/zebra/z.png", Pattern(8, 8, 3, 1));
  absl::Status extra_class = LoadDataset(PacsOptions(dir.path())).status();
  EXPECT_NE(extra_class.message().find(root + "/art_painting/zebra"), std::string::npos)
      << extra_class;

  absl::Status no_dir = LoadDataset(PacsOptions(dir.path() + "/nowhere")).status();
  EXPECT_NE(no_dir.message().find(dir.path() + "/nowhere/PACS"), std::string::npos) << no_dir;
  absl::Status no_data_dir = LoadDataset(PacsOptions("")).status();
  EXPECT_NE(no_data_dir.message().find("data.data_dir"), std::string::npos) << no_data_dir;
}

TEST(ImageFolderTest, CorruptImagesAreNamedOrSkippedAndCounted) {
  moa::test::TempDir dir;
  WritePacs(dir.path(), 2);
  const std::string root = dir.path() + "/PACS";
  MOA_ASSERT_OK(WriteFileAtomically(root + "/cartoon/dog/broken.jpg", "garbage bytes"));
  // A JPEG large enough that cutting it in half leaves its header whole.
  MOA_ASSERT_OK_AND_ASSIGN(std::string good, EncodeJpeg(Pattern(160, 120, 3, 7), 90));
  MOA_ASSERT_OK(
      WriteFileAtomically(root + "/photo/house/cut.jpg", good.substr(0, good.size() / 2)));

  absl::Status header = LoadDataset(PacsOptions(dir.path())).status();
  EXPECT_EQ(header.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(header.message().find(root + "/cartoon/dog/broken.jpg"), std::string::npos) << header;

  LoadOptions full = PacsOptions(dir.path());
  full.check = "full";
  full.skip_corrupt = true;
  MOA_ASSERT_OK_AND_ASSIGN(DomainDataset skipped, LoadDataset(full));
  EXPECT_EQ(skipped.domains[1].size(), 14);  // broken.jpg left out
  EXPECT_EQ(skipped.domains[2].size(), 14);  // cut.jpg left out: only a full decode finds it
  full.skip_corrupt = false;
  absl::Status truncated = LoadDataset(full).status();
  EXPECT_NE(truncated.message().find(root + "/photo/house/cut.jpg"), std::string::npos)
      << truncated;
  EXPECT_NE(truncated.message().find("truncated"), std::string::npos) << truncated;

  LoadOptions header_skip = PacsOptions(dir.path());
  header_skip.skip_corrupt = true;
  MOA_ASSERT_OK_AND_ASSIGN(DomainDataset partly, LoadDataset(header_skip));
  EXPECT_EQ(partly.domains[2].size(), 15);  // the header of cut.jpg is intact
}

TEST(ImageFolderTest, GenericImageFolderDiscoversEnvironmentsAndClasses) {
  moa::test::TempDir dir;
  data::test::WriteImageFolder(dir.path(), {"b_env", "a_env"}, {"zeta", "alpha", "mid"}, 2);
  LoadOptions options;
  options.dataset = "ImageFolder";
  options.data_dir = dir.path();
  options.holdout_fraction = 0.5;
  MOA_ASSERT_OK_AND_ASSIGN(DomainDataset dataset, LoadDataset(options));
  ASSERT_EQ(dataset.domains.size(), 2u);
  EXPECT_EQ(dataset.domains[0].name, "a_env");
  EXPECT_EQ(dataset.classes, (std::vector<std::string>{"alpha", "mid", "zeta"}));
  EXPECT_EQ(dataset.domains[1].out.size(), 3u);
}

// A tiny two-environment folder for the streams.
DomainDataset StreamDataset(const moa::test::TempDir& dir) {
  data::test::WriteImageFolder(dir.path(), {"e0", "e1"}, {"c0", "c1"}, 4);
  LoadOptions options;
  options.dataset = "ImageFolder";
  options.data_dir = dir.path();
  absl::StatusOr<DomainDataset> dataset = LoadDataset(options);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return *dataset;
}

std::vector<Batch> TakeImages(const DomainDataset& dataset, int64_t dp_rank, int64_t dp_size,
                              int64_t workers, int64_t first_step, int steps) {
  StreamOptions options;
  options.train_domains = {0, 1};
  options.batch_size = 4;
  options.seed = 3;
  options.dp_rank = dp_rank;
  options.dp_size = dp_size;
  options.workers = workers;
  options.first_step = first_step;
  options.image_size = 16;
  options.prefetch = 2;
  DomainStream stream(dataset, options);
  std::vector<Batch> batches;
  for (int s = 0; s < steps; ++s) batches.push_back(stream.Next());
  return batches;
}

TEST(ImageStreamTest, BatchesAreKeyedAugmentationsOfTheDrawnFiles) {
  moa::test::TempDir dir;
  const DomainDataset dataset = StreamDataset(dir);
  const std::vector<Batch> batches = TakeImages(dataset, 0, 1, 3, 0, 3);
  for (const Batch& batch : batches) {
    ASSERT_EQ(batch.images.sizes(), (std::vector<int64_t>{8, 3, 16, 16}));
    for (int64_t k = 0; k < 2; ++k) {
      const std::vector<int64_t> draw =
          DrawIndices(3, k, batch.step, dataset.domains[k].in.size(), 4);
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t sample = dataset.domains[k].in[draw[j]];
        const int64_t row = 4 * k + j;
        EXPECT_EQ(batch.domain_ids[row].item<int64_t>(), k);
        EXPECT_EQ(batch.labels[row].item<int64_t>(),
                  dataset.domains[k].labels[sample].item<int64_t>());
        MOA_ASSERT_OK_AND_ASSIGN(RgbImage image, DecodeImageFile(dataset.domains[k].files[sample]));
        torch::Tensor expected = torch::empty({3, 16, 16});
        const AugmentParams params =
            SampleAugment({0x617567, 3, static_cast<uint64_t>(batch.step), static_cast<uint64_t>(k),
                           static_cast<uint64_t>(j)},
                          image.width, image.height);
        TrainTransform(image, params, 16, expected.data_ptr<float>());
        EXPECT_TRUE(torch::equal(batch.images[row], expected))
            << "step " << batch.step << " row " << row;
      }
    }
  }
}

TEST(ImageStreamTest, SameDataForAnyRanksWorkersAndResume) {
  moa::test::TempDir dir;
  const DomainDataset dataset = StreamDataset(dir);
  const std::vector<Batch> whole = TakeImages(dataset, 0, 1, 1, 0, 4);
  const std::vector<Batch> rank0 = TakeImages(dataset, 0, 2, 2, 0, 4);
  const std::vector<Batch> rank1 = TakeImages(dataset, 1, 2, 3, 0, 4);
  const std::vector<Batch> resumed = TakeImages(dataset, 0, 1, 2, 2, 2);
  for (int s = 0; s < 4; ++s) {
    // Rank r holds rows [2r, 2r + 2) of each domain's minibatch.
    const torch::Tensor joined =
        torch::cat({rank0[s].images.narrow(0, 0, 2), rank1[s].images.narrow(0, 0, 2),
                    rank0[s].images.narrow(0, 2, 2), rank1[s].images.narrow(0, 2, 2)});
    EXPECT_TRUE(torch::equal(joined, whole[s].images)) << "step " << s;
  }
  for (int s = 0; s < 2; ++s) EXPECT_TRUE(torch::equal(resumed[s].images, whole[s + 2].images));
}

TEST(ImageStreamTest, ACorruptFileStopsTheStreamWithItsName) {
  moa::test::TempDir dir;
  DomainDataset dataset = StreamDataset(dir);
  for (std::string& file : dataset.domains[1].files) {
    MOA_ASSERT_OK(WriteFileAtomically(file, "broken"));
  }
  StreamOptions options;
  options.train_domains = {0, 1};
  options.batch_size = 2;
  options.image_size = 8;
  DomainStream stream(dataset, options);
  try {
    stream.Next();
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path() + "/e1/"), std::string::npos) << e.what();
  }
}

TEST(SplitLoaderTest, EvaluationBatchesAreTheEvaluationTransformInOrder) {
  moa::test::TempDir dir;
  const DomainDataset dataset = StreamDataset(dir);
  const Domain& domain = dataset.domains[1];
  const std::vector<int64_t> indices = {7, 0, 3, 5, 1};
  SplitLoader loader(domain, indices, 2, 2, 24);
  torch::Tensor images, labels;
  size_t seen = 0;
  while (loader.Next(&images, &labels)) {
    for (int64_t i = 0; i < images.size(0); ++i, ++seen) {
      MOA_ASSERT_OK_AND_ASSIGN(RgbImage image, DecodeImageFile(domain.files[indices[seen]]));
      torch::Tensor expected = torch::empty({3, 24, 24});
      EvalTransform(image, 24, expected.data_ptr<float>());
      EXPECT_TRUE(torch::equal(images[i], expected));
      EXPECT_EQ(labels[i].item<int64_t>(), domain.labels[indices[seen]].item<int64_t>());
    }
  }
  EXPECT_EQ(seen, indices.size());
}

}  // namespace
}  // namespace moa::data
