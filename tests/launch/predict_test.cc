// `moa predict` with the real executable on a real image folder: its logits equal the evaluation
// loader's batches through the model and its top-1 agrees with `moa eval` on the same domain, its
// probabilities are the softmax of its logits, two ranks under mpirun give the one-process rows, an
// ensemble averages the logits, and bad files are named and skipped.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include <absl/strings/str_split.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/safetensors.h"
#include "data/dataset.h"
#include "data/stream.h"
#include "launch/options.h"
#include "tests/data/image_fixtures.h"
#include "tests/support/test_support.h"
#include "trainer/build.h"
#include "trainer/evaluate.h"
#include "trainer/predict.h"

namespace moa {
namespace {

std::string PredictMoa() { return test::BinaryDir() + "/moa"; }

struct Row {
  std::string image;
  std::vector<std::string> classes;
  std::vector<double> probs;
  std::map<std::string, double> logits;
};

std::vector<Row> ReadCsv(const std::string& path, int top_k) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> header = absl::StrSplit(line, ',');
  std::vector<Row> rows;
  while (std::getline(in, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, ',');
    EXPECT_EQ(fields.size(), header.size()) << line;
    if (fields.size() != header.size()) continue;
    Row row;
    row.image = fields[0];
    for (int k = 0; k < top_k; ++k) {
      row.classes.push_back(fields[1 + 2 * k]);
      row.probs.push_back(std::stod(fields[2 + 2 * k]));
    }
    for (size_t c = 1 + 2 * top_k; c < fields.size(); ++c) {
      row.logits[header[c].substr(std::string("logit:").size())] = std::stod(fields[c]);
    }
    rows.push_back(row);
  }
  return rows;
}

// `moa eval`'s correct count over both splits of `domain`.
int64_t EvalCorrect(const std::string& eval_output, const std::string& domain) {
  int64_t correct = 0;
  for (const char* split : {"in", "out"}) {
    std::smatch match;
    const std::regex line("\\s" + domain + "\\s+" + split + "\\s+[0-9.]+%\\s+([0-9]+) / [0-9]+");
    EXPECT_TRUE(std::regex_search(eval_output, match, line)) << eval_output;
    if (!match.empty()) correct += std::stoll(match[1]);
  }
  return correct;
}

TEST(PredictTest, AgreesWithEvalShardsUnderMpirunAndAveragesAnEnsemble) {
  test::TempDir dir;
  data::test::WriteImageFolder(dir.File("data"), {"a", "b", "c"}, {"x", "y", "z"}, 4);
  const std::string config = " --config " + test::SourceDir() +
                             "/configs/tiny_images.ini --data.data_dir=" + dir.File("data");
  std::string out;
  // Two runs on the same (random, seeded) backbone, trained on other in/out splits.
  for (const char* seed : {"0", "1"}) {
    ASSERT_EQ(test::RunShell(PredictMoa() + " train" + config + " --train.trial_seed=" + seed +
                                 " --output.dir=" + dir.File(std::string("run") + seed),
                             &out),
              0)
        << out;
  }
  const std::string first = dir.File("run0/checkpoints/selected.safetensors");
  const std::string second = dir.File("run1/checkpoints/selected.safetensors");
  const std::string predict = PredictMoa() + " predict" + config + " --images " +
                              dir.File("data/a") + " --top_k 3 --logits --adapters ";
  ASSERT_EQ(test::RunShell(predict + first + " --output " + dir.File("one.csv"), &out), 0) << out;
  EXPECT_NE(out.find("12 of 12 images classified"), std::string::npos) << out;
  const std::vector<Row> one = ReadCsv(dir.File("one.csv"), 3);
  ASSERT_EQ(one.size(), 12u);

  int64_t correct = 0;
  for (const Row& row : one) {
    // The probabilities are the softmax of the row's logits, in decreasing order.
    double norm = 0;
    for (const auto& [name, z] : row.logits) norm += std::exp(z);
    double total = 0;
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(row.probs[k], std::exp(row.logits.at(row.classes[k])) / norm, 1e-6);
      if (k > 0) {
        EXPECT_LE(row.probs[k], row.probs[k - 1]);
      }
      total += row.probs[k];
    }
    EXPECT_NEAR(total, 1.0, 1e-6);
    const std::string label = std::filesystem::path(row.image).parent_path().filename();
    correct += row.classes[0] == label;
  }
  ASSERT_EQ(test::RunShell(PredictMoa() + " eval" + config + " --adapters " + first, &out), 0)
      << out;
  EXPECT_EQ(correct, EvalCorrect(out, "a"));

  // The same logits as the evaluation loader's batches through the model, image by image.
  auto run_config = launch::LoadConfig(dir.File("run0/config.ini"), {});
  MOA_ASSERT_OK(run_config);
  MOA_ASSERT_OK_AND_ASSIGN(data::LoadOptions load, trainer::DatasetOptions(*run_config));
  MOA_ASSERT_OK_AND_ASSIGN(data::DomainDataset dataset, data::LoadDataset(load));
  MOA_ASSERT_OK_AND_ASSIGN(data::DatasetInfo info, trainer::ModelDatasetInfo(*run_config));
  MOA_ASSERT_OK_AND_ASSIGN(auto model,
                           trainer::ModelWithAdapters(*run_config, info, first, torch::kCPU));
  const data::Domain& domain = dataset.domains[0];
  std::vector<int64_t> all(domain.files.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  data::SplitLoader loader(domain, all, 5, 1, run_config->model.img_size);
  torch::NoGradGuard no_grad;
  torch::Tensor images, labels;
  std::map<std::string, torch::Tensor> expected;
  for (size_t next = 0; loader.Next(&images, &labels);) {
    const torch::Tensor logits = model->forward(images);
    for (int64_t j = 0; j < logits.size(0); ++j) expected[domain.files[all[next++]]] = logits[j];
  }
  ASSERT_EQ(expected.size(), one.size());
  const std::vector<std::string>& classes = dataset.classes;
  for (const Row& row : one) {
    ASSERT_TRUE(expected.count(row.image)) << row.image;
    for (size_t c = 0; c < classes.size(); ++c) {
      EXPECT_NEAR(row.logits.at(classes[c]), expected[row.image][c].item<double>(), 1e-5)
          << row.image << " " << classes[c];
    }
  }

  // Two ranks, each with every other image.
  ASSERT_EQ(test::RunShell("mpirun --allow-run-as-root --oversubscribe --bind-to none --mca "
                           "btl_vader_single_copy_mechanism none -np 2 " +
                               predict + first + " --output " + dir.File("two.csv"),
                           &out),
            0)
      << out;
  const std::vector<Row> two = ReadCsv(dir.File("two.csv"), 3);
  ASSERT_EQ(two.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(two[i].image, one[i].image);
    for (const auto& [name, z] : one[i].logits) EXPECT_NEAR(two[i].logits.at(name), z, 1e-5);
  }

  // The ensemble's logits are the mean of each checkpoint's.
  ASSERT_EQ(test::RunShell(predict + second + " --output " + dir.File("second.csv"), &out), 0)
      << out;
  ASSERT_EQ(
      test::RunShell(predict + first + " " + second + " --output " + dir.File("both.csv"), &out), 0)
      << out;
  const std::vector<Row> other = ReadCsv(dir.File("second.csv"), 3);
  const std::vector<Row> both = ReadCsv(dir.File("both.csv"), 3);
  ASSERT_EQ(both.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) {
    for (const auto& [name, z] : one[i].logits) {
      EXPECT_NEAR(both[i].logits.at(name), (z + other[i].logits.at(name)) / 2, 1e-5);
    }
  }
}

TEST(PredictTest, BadFilesAreNamedAndSkippedWithExitCodeOne) {
  test::TempDir dir;
  data::test::WriteImageFolder(dir.File("data"), {"a", "b", "c"}, {"x", "y"}, 4);
  const std::string config = " --config " + test::SourceDir() +
                             "/configs/tiny_images.ini --data.data_dir=" + dir.File("data");
  std::string out;
  ASSERT_EQ(test::RunShell(PredictMoa() + " train" + config +
                               " --train.steps=2 --output.dir=" + dir.File("run"),
                           &out),
            0)
      << out;
  const std::string adapters = " --adapters " + dir.File("run/checkpoints/selected.safetensors");
  std::ofstream(dir.File("broken.png")) << "not a png";
  std::vector<std::string> good;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir.File("data/b"))) {
    if (entry.is_regular_file()) good.push_back(entry.path().string());
  }
  ASSERT_EQ(good.size(), 8u);
  std::ofstream(dir.File("list.txt")) << "# two good, two bad\n"
                                      << good[0] << "\n"
                                      << dir.File("broken.png") << "\n\n"
                                      << dir.File("missing.jpg") << "\n"
                                      << good[1] << "\n";
  EXPECT_EQ(test::RunShell(PredictMoa() + " predict" + config + adapters + " --images " +
                               dir.File("list.txt") + " --output " + dir.File("p.csv"),
                           &out),
            1)
      << out;
  EXPECT_NE(out.find("skipped " + dir.File("broken.png")), std::string::npos) << out;
  EXPECT_NE(out.find("skipped " + dir.File("missing.jpg")), std::string::npos) << out;
  EXPECT_NE(out.find("2 of 4 images classified, 2 skipped"), std::string::npos) << out;
  const std::vector<Row> rows = ReadCsv(dir.File("p.csv"), 2);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].image, good[0]);
  EXPECT_EQ(rows[1].image, good[1]);

  EXPECT_EQ(test::RunShell(PredictMoa() + " predict" + config + adapters + " --images " +
                               dir.File("nowhere") + " --output " + dir.File("q.csv"),
                           &out),
            1);
  EXPECT_NE(out.find("--images " + dir.File("nowhere") + ": no such folder or list file"),
            std::string::npos)
      << out;
  EXPECT_EQ(test::RunShell(PredictMoa() + " predict" + config + adapters + " --top_k 0 --images " +
                               dir.File("list.txt") + " --output " + dir.File("q.csv"),
                           &out),
            2);
  EXPECT_FALSE(std::filesystem::exists(dir.File("q.csv")));
}

// One-channel models (the MNIST family) take the image resized to the model's side and converted
// to grey as PIL does it (torchvision's resize, then Image.convert("L"); tests/python/
// pil_reference.py), over 255: equal to the byte.
TEST(PredictTest, OneChannelInputIsPilGreyOver255) {
  test::TempDir dir;
  data::RawImage image = data::test::Pattern(40, 33, 3, 7);
  data::test::WriteImage(dir.File("colour.png"), image);
  const nlohmann::json jobs = nlohmann::json::array(
      {{{"name", "grey"}, {"path", dir.File("colour.png")}, {"op", "resize_grey"}, {"size", 28}}});
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("jobs.json"), jobs.dump()));
  ASSERT_EQ(test::RunPython("pil_reference.py",
                            dir.File("jobs.json") + " " + dir.File("reference.safetensors")),
            0);
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile reference,
                           ReadSafetensors(dir.File("reference.safetensors")));
  const torch::Tensor grey = reference.tensors.at("grey").select(2, 0).contiguous();
  ASSERT_EQ(grey.sizes(), (torch::IntArrayRef{28, 28}));
  std::vector<float> input(28 * 28);
  MOA_ASSERT_OK(trainer::PrepareImage(dir.File("colour.png"), 1, 28, input.data()));
  const uint8_t* want = grey.data_ptr<uint8_t>();
  for (int i = 0; i < 28 * 28; ++i) {
    ASSERT_EQ(input[i], static_cast<float>(want[i]) / 255.0f) << "pixel " << i;
  }
  EXPECT_FALSE(trainer::PrepareImage(dir.File("colour.png"), 2, 28, input.data()).ok());
}

}  // namespace
}  // namespace moa
