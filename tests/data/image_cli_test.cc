// The image-folder datasets end to end through the `moa` executable: `moa data check` (layout,
// counts, every file decoded, the bad ones named), a short training run on an image folder
// (configs/tiny_images.ini), which must produce DomainBed's records, and `moa info` and
// `moa export`, which must build the model with the folder's classes.
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/safetensors.h"
#include "tests/data/image_fixtures.h"
#include "tests/support/test_support.h"

namespace moa::data {
namespace {

std::string Moa() { return moa::test::BinaryDir() + "/moa"; }

TEST(DataCheckCommandTest, ListsCountsAndNamesFilesThatDoNotDecode) {
  moa::test::TempDir dir;
  data::test::WriteImageFolder(dir.path(), {"north", "south"}, {"cat", "dog", "owl"}, 2);
  std::string out;
  ASSERT_EQ(moa::test::RunShell(Moa() + " data check --data.data_dir " + dir.path(), &out), 0)
      << out;
  EXPECT_NE(out.find("2 environments, 3 classes"), std::string::npos) << out;
  EXPECT_NE(out.find("north"), std::string::npos) << out;
  EXPECT_NE(out.find("6 images: cat 2, dog 2, owl 2"), std::string::npos) << out;
  EXPECT_NE(out.find("all 12 images decode"), std::string::npos) << out;

  MOA_ASSERT_OK_AND_ASSIGN(std::string jpeg, ReadFile(dir.path() + "/south/owl/img0.jpg"));
  MOA_ASSERT_OK(WriteFileAtomically(dir.path() + "/south/owl/img0.jpg", jpeg.substr(0, 200)));
  MOA_ASSERT_OK(WriteFileAtomically(dir.path() + "/north/cat/notes.png", "text"));
  EXPECT_EQ(moa::test::RunShell(Moa() + " data check --data.data_dir=" + dir.path(), &out), 1)
      << out;
  EXPECT_NE(out.find("cannot decode: " + dir.path() + "/south/owl/img0.jpg"), std::string::npos)
      << out;
  EXPECT_NE(out.find("cannot decode: " + dir.path() + "/north/cat/notes.png"), std::string::npos)
      << out;
  EXPECT_NE(out.find("2 of 13 images do not decode"), std::string::npos) << out;

  EXPECT_EQ(moa::test::RunShell(
                Moa() + " data check --data.dataset PACS --data.data_dir " + dir.path(), &out),
            1);
  EXPECT_NE(out.find("dataset folder " + dir.path() + "/PACS does not exist"), std::string::npos)
      << out;
}

// The spellings from before the one parser (--dataset, --data_dir, --workers) still work, each
// with a line naming its new spelling.
TEST(DataCheckCommandTest, OldSpellingsStillWorkWithADeprecationNote) {
  moa::test::TempDir dir;
  data::test::WriteImageFolder(dir.path(), {"north", "south"}, {"cat", "dog"}, 1);
  std::string out;
  ASSERT_EQ(moa::test::RunShell(Moa() + " data check --dataset ImageFolder --data_dir " +
                                    dir.path() + " --workers=1",
                                &out),
            0)
      << out;
  EXPECT_NE(out.find("all 4 images decode"), std::string::npos) << out;
  EXPECT_NE(out.find("decoding 4 images on 1 threads"), std::string::npos) << out;
  for (const char* line : {"moa data check: --dataset is deprecated; use --data.dataset\n",
                           "moa data check: --data_dir is deprecated; use --data.data_dir\n",
                           "moa data check: --workers is deprecated; use --data.workers\n"}) {
    EXPECT_NE(out.find(line), std::string::npos) << out;
  }
}

// Trains configs/tiny_images.ini on a folder of environments a, b, c and classes x, y with
// `per_class` images each, written into `dir`; returns the exit code, the output in `out`.
int TrainOnImageFolder(const moa::test::TempDir& dir, int per_class, std::string* out) {
  data::test::WriteImageFolder(dir.File("data"), {"a", "b", "c"}, {"x", "y"}, per_class);
  return moa::test::RunShell(Moa() + " train --config " + moa::test::SourceDir() +
                                 "/configs/tiny_images.ini --data.data_dir=" + dir.File("data") +
                                 " --output.dir=" + dir.File("run"),
                             out);
}

TEST(ImageTrainingTest, TrainsOnAnImageFolderAndRecordsEveryEnvironment) {
  moa::test::TempDir dir;
  std::string out;
  ASSERT_EQ(TrainOnImageFolder(dir, 5, &out), 0) << out;
  EXPECT_TRUE(std::filesystem::exists(dir.File("run/done"))) << out;
  std::ifstream results(dir.File("run/results.jsonl"));
  std::string line, last;
  int records = 0;
  while (std::getline(results, line)) {
    if (!line.empty()) last = line, ++records;
  }
  EXPECT_EQ(records, 2);  // steps 0 and 5
  const nlohmann::json record = nlohmann::json::parse(last);
  EXPECT_EQ(record["step"].get<int64_t>(), 5);
  for (const char* key : {"env0_out_acc", "env1_out_acc", "env2_in_acc", "env2_out_acc"}) {
    ASSERT_TRUE(record.contains(key)) << key << " in " << last;
    EXPECT_GE(record[key].get<double>(), 0.0);
    EXPECT_LE(record[key].get<double>(), 1.0);
  }
  EXPECT_EQ(record["args"]["dataset"], "ImageFolder");
}

// Two images per environment leave no `out` split at holdout 0.2 (floor(0.4) = 0), which model
// selection needs: refused before training, naming the environment, rather than failing at the
// first evaluation.
TEST(ImageTrainingTest, AnEnvironmentTooSmallForAnOutSplitIsRefused) {
  moa::test::TempDir dir;
  std::string out;
  EXPECT_EQ(TrainOnImageFolder(dir, 1, &out), 1) << out;
  EXPECT_NE(out.find("environment a has 2 images, too few for both an in and an out split"),
            std::string::npos)
      << out;
  EXPECT_FALSE(std::filesystem::exists(dir.File("run/results.jsonl")));
}

// ImageFolder's classes are known only from its folders: `moa info` and `moa export` scan
// data.data_dir as training does (3 classes here, where the registry says 0), so export loads the
// trained 3-class head; model.num_classes overrides the scan; without data.data_dir both say so.
TEST(ImageModelCommandsTest, InfoAndExportSeeTheFolderClasses) {
  moa::test::TempDir dir;
  data::test::WriteImageFolder(dir.File("data"), {"a", "b", "c"}, {"x", "y", "z"}, 2);
  const std::string config = " --config " + moa::test::SourceDir() + "/configs/tiny_images.ini";
  const std::string data_dir = " --data.data_dir=" + dir.File("data");
  std::string out;
  ASSERT_EQ(moa::test::RunShell(Moa() + " info" + config + data_dir, &out), 0) << out;
  EXPECT_NE(out.find("dataset ImageFolder (3 classes)"), std::string::npos) << out;
  char head[64];
  std::snprintf(head, sizeof(head), "%-10s %14s", "head", "99");  // 32 x 3 + 3, as info prints it
  EXPECT_NE(out.find(head), std::string::npos) << out;
  ASSERT_EQ(
      moa::test::RunShell(Moa() + " info" + config + data_dir + " --model.num_classes=5", &out), 0)
      << out;
  EXPECT_NE(out.find("dataset ImageFolder (5 classes)"), std::string::npos) << out;
  EXPECT_EQ(moa::test::RunShell(Moa() + " info" + config, &out), 2) << out;
  EXPECT_NE(out.find("data.data_dir must name the folder"), std::string::npos) << out;

  ASSERT_EQ(moa::test::RunShell(
                Moa() + " train" + config + data_dir +
                    " --train.steps=2 --train.checkpoint_freq=1 --output.dir=" + dir.File("run"),
                &out),
            0)
      << out;
  const std::string export_args =
      " --merge --adapters=" + dir.File("run/checkpoints/selected.safetensors") +
      " --output=" + dir.File("merged.safetensors");
  ASSERT_EQ(moa::test::RunShell(Moa() + " export" + config + data_dir + export_args, &out), 0)
      << out;
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile merged, ReadSafetensors(dir.File("merged.safetensors")));
  ASSERT_TRUE(merged.tensors.count("head.weight"));
  EXPECT_EQ(merged.tensors.at("head.weight").sizes(), torch::IntArrayRef({3, 32}));
  EXPECT_EQ(moa::test::RunShell(Moa() + " export" + config + export_args, &out), 1) << out;
  EXPECT_NE(out.find("data.data_dir must name the folder"), std::string::npos) << out;
}

}  // namespace
}  // namespace moa::data
