// The `moa` command line as a user runs it: help, `moa info` on every shipped configuration
// (image-folder ones on a folder written here), and the exit codes and messages of bad
// invocations.
#include <filesystem>

#include "common/files.h"
#include "tests/data/image_fixtures.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

std::string Moa() { return test::BinaryDir() + "/moa"; }

TEST(CommandsTest, HelpListsCommandsAndOptions) {
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " --help", &out), 0);
  for (const char* word : {"train", "pretrain", "info", "--optim.lr", "--adapter.rank"}) {
    EXPECT_NE(out.find(word), std::string::npos) << word;
  }
  ASSERT_EQ(test::RunShell(Moa() + " train --help", &out), 0);
  EXPECT_NE(out.find("--data.test_envs"), std::string::npos);
  EXPECT_NE(out.find("the dataset's default, 5001; DomainNet 15001) (default: -1)"),
            std::string::npos)
      << out;
  EXPECT_EQ(test::RunShell(Moa() + " frobnicate", &out), 2);
  EXPECT_NE(out.find("unknown command 'frobnicate'"), std::string::npos);
  EXPECT_EQ(test::RunShell(Moa() + " train stray", &out), 2);
  EXPECT_NE(out.find("stray"), std::string::npos);
}

TEST(CommandsTest, InfoWorksOnEveryShippedConfig) {
  // ImageFolder configurations leave data.data_dir to the user; info scans it for the classes.
  test::TempDir images;
  data::test::WriteImageFolder(images.path(), {"a", "b"}, {"x", "y"}, 1);
  int configs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(test::SourceDir() + "/configs")) {
    if (entry.path().extension() != ".ini") continue;
    ++configs;
    std::string out;
    MOA_ASSERT_OK_AND_ASSIGN(std::string text, ReadFile(entry.path().string()));
    const bool image_folder = text.find("dataset = ImageFolder") != std::string::npos;
    EXPECT_EQ(test::RunShell(Moa() + " info --config " + entry.path().string() +
                                 (image_folder ? " --data.data_dir=" + images.path() : ""),
                             &out),
              0)
        << entry.path() << "\n"
        << out;
    EXPECT_NE(out.find("trainable"), std::string::npos) << entry.path();
    if (image_folder) EXPECT_NE(out.find("(2 classes)"), std::string::npos) << out;
  }
  EXPECT_GE(configs, 3);
}

TEST(CommandsTest, InfoCountsViTB16LoRA) {
  std::string out;
  ASSERT_EQ(test::RunShell(
                Moa() + " info --data.dataset=PACS --adapter.method=lora --adapter.rank=2", &out),
            0)
      << out;
  EXPECT_NE(out.find("85,799,424"), std::string::npos) << out;
  EXPECT_NE(out.find("110,592"), std::string::npos) << out;
  EXPECT_NE(out.find("5,383"), std::string::npos) << out;  // 768 x 7 + 7
}

TEST(CommandsTest, PaperRowConfigsHaveThePapersCounts) {
  // Trainable parameters without the head (docs/method.md, Parameter counts and Quirks Q17).
  const std::pair<const char*, const char*> rows[] = {
      {"vitb16_full.ini", "85,799,424"},    {"vitb16_attention.ini", "28,348,416"},
      {"vitb16_lora.ini", "110,592"},       {"vitb16_kadaptation.ini", "146,432"},
      {"vitb16_lora_moa.ini", "1,463,814"}, {"vitb16_kadaptation_moa.ini", "1,494,022"},
  };
  for (const auto& [file, count] : rows) {
    std::string out;
    ASSERT_EQ(
        test::RunShell(Moa() + " info --config " + test::SourceDir() + "/configs/" + file, &out), 0)
        << out;
    EXPECT_NE(out.find("(" + std::string(count) + " without the head)"), std::string::npos)
        << file << "\n"
        << out;
    EXPECT_NE(out.find("85,799,424"), std::string::npos) << file;  // the CLIP ViT-B/16 backbone
  }
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " info --config " + test::SourceDir() +
                               "/configs/vitb16_lora_moa.ini --adapter.blocks=last:2",
                           &out),
            0);
  EXPECT_NE(out.find("(487,938 without the head)"), std::string::npos) << out;
}

TEST(CommandsTest, BadConfigurationExitsWithTwoAndNamesTheKey) {
  std::string out;
  EXPECT_EQ(test::RunShell(Moa() + " train --config " + test::SourceDir() +
                               "/configs/tiny.ini --train.steps=0",
                           &out),
            2);
  EXPECT_NE(out.find("train.steps"), std::string::npos) << out;
}

}  // namespace
}  // namespace moa
