// TensorBoard event files: CRC-32C against the iSCSI check vectors (RFC 3720, B.4), the scalars
// of a record, and a real MoA run's tb/ read back by TensorBoard's own reader (EventAccumulator)
// with every scalar equal to results.jsonl, and a corrupted byte rejected by its record reader.
// `moa report` rendered by headless Chromium: the script runs, every (domain, split) has one
// curve with one point per record, the selected step is marked where results.jsonl puts it, the
// heat maps have a cell per (layer, expert, record), and the screenshot is not blank.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "data/image_io.h"
#include "report/crc32c.h"
#include "report/tensorboard.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

namespace fs = std::filesystem;

TEST(Crc32cTest, MatchesTheIscsiCheckVectors) {
  const std::string digits = "123456789";
  EXPECT_EQ(report::Crc32c(digits.data(), digits.size()), 0xE3069283u);
  std::vector<uint8_t> bytes(32, 0);
  EXPECT_EQ(report::Crc32c(bytes.data(), bytes.size()), 0x8A9136AAu);
  std::fill(bytes.begin(), bytes.end(), 0xFF);
  EXPECT_EQ(report::Crc32c(bytes.data(), bytes.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(report::Crc32c(bytes.data(), bytes.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(report::Crc32c(bytes.data(), bytes.size()), 0x113FDB5Cu);
  // The mask: rotate right by 15, add 0xa282ead8 (modulo 2^32).
  EXPECT_EQ(report::MaskCrc(0), 0xa282ead8u);
  EXPECT_EQ(report::MaskCrc(1u << 15), 1u + 0xa282ead8u);
  EXPECT_EQ(report::MaskCrc(1), (1u << 17) + 0xa282ead8u);
}

TEST(RecordScalarsTest, NamesEveryNumberOfARecord) {
  const nlohmann::json record = nlohmann::json::parse(R"({
    "step": 10, "epoch": 0.5, "loss": 2.5, "lr": 0.001, "step_time": 0.1, "images_per_s": 80,
    "env0_in_acc": 0.25, "env0_out_loss": 1.5, "env12_in_acc": 0.75, "mem_gb": 0.4,
    "router": [{"layer": 3, "share": [0.75, 0.25], "dropped": 2, "aux_loss": 0.01}],
    "args": {"dataset": "X"}, "hparams": {"lr": 0.001}})");
  const report::Scalars expected = {{"train/loss", 2.5},
                                    {"train/lr", 0.001},
                                    {"train/step_time", 0.1},
                                    {"train/images_per_s", 80},
                                    {"train/mem_gb", 0.4},
                                    {"eval/env0_in_acc", 0.25},
                                    {"eval/env0_out_loss", 1.5},
                                    {"eval/env12_in_acc", 0.75},
                                    {"router/layer3/expert0_share", 0.75},
                                    {"router/layer3/expert1_share", 0.25},
                                    {"router/layer3/dropped", 2},
                                    {"router/layer3/aux_loss", 0.01}};
  EXPECT_EQ(report::RecordScalars(record), expected);
}

std::string EventFile(const std::string& tb) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(tb)) files.push_back(entry.path().string());
  EXPECT_EQ(files.size(), 1u) << tb;
  return files.empty() ? "" : files[0];
}

TEST(TensorBoardTest, EveryScalarOfAMoaRunReadsBackAsInResultsJsonl) {
  test::TempDir dir;
  std::string out;
  const std::string run = dir.File("run");
  ASSERT_EQ(test::RunShell(test::BinaryDir() + "/moa train --config " + test::SourceDir() +
                               "/configs/tiny.ini --adapter.method=moa --output.dir=" + run,
                           &out),
            0)
      << out;
  ASSERT_EQ(
      test::RunPython("tensorboard_read.py", "scalars " + run + "/tb " + dir.File("scalars.json"),
                      dir.File("read.log")),
      0);
  std::ifstream in(dir.File("scalars.json"));
  const nlohmann::json scalars = nlohmann::json::parse(in);
  const std::vector<nlohmann::json> records = test::ReadJsonLines(run + "/results.jsonl");
  ASSERT_EQ(records.size(), 4u);  // steps 0, 5, 10, 11
  // Each tag has one point per record, at the record's step, with its value as float32.
  size_t expected_tags = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const report::Scalars from_record = report::RecordScalars(records[i]);
    if (i == 0) expected_tags = from_record.size() + 1;  // and the selection criterion
    for (const auto& [tag, value] : from_record) {
      ASSERT_TRUE(scalars.contains(tag)) << tag;
      ASSERT_EQ(scalars[tag].size(), records.size()) << tag;
      EXPECT_EQ(scalars[tag][i][0], records[i]["step"]) << tag;
      EXPECT_EQ(scalars[tag][i][1].get<double>(), static_cast<double>(static_cast<float>(value)))
          << tag << " at record " << i;
    }
    // Training-domain validation: the mean `out` accuracy of the training domains (0 to 4).
    double criterion = 0;
    for (int e = 0; e < 5; ++e)
      criterion += records[i]["env" + std::to_string(e) + "_out_acc"].get<double>();
    EXPECT_EQ(scalars["selection/training_domain_validation_acc"][i][1].get<double>(),
              static_cast<double>(static_cast<float>(criterion / 5)));
  }
  EXPECT_EQ(scalars.size(), expected_tags);
  // What the issue lists is there: 2 blocks x 2 (qkv, proj) MoA layers of 4 experts.
  for (const char* tag :
       {"train/loss", "train/lr", "train/images_per_s", "train/mem_gb", "eval/env5_in_acc",
        "eval/env5_out_loss", "router/layer3/expert3_share", "router/layer0/aux_loss"}) {
    EXPECT_TRUE(scalars.contains(tag)) << tag;
  }
  EXPECT_DOUBLE_EQ(scalars["train/lr"][0][1].get<double>(), static_cast<float>(1e-3));

  // One flipped byte inside the first summary event: TensorBoard's record reader refuses it.
  const std::string events = EventFile(run + "/tb");
  ASSERT_EQ(test::RunPython("tensorboard_read.py", "records " + events, dir.File("ok.log")), 0);
  fs::copy_file(events, dir.File("corrupt.tfevents"));
  {
    std::fstream file(dir.File("corrupt.tfevents"),
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(100);
    const char byte = static_cast<char>(file.get());
    file.seekp(100);
    file.put(static_cast<char>(byte ^ 0x10));
  }
  // RunPython fails the test on a non-zero exit, which is the expected outcome here.
  EXPECT_EQ(test::RunShell(test::PythonPath() + " " + test::SourceDir() +
                               "/tests/python/tensorboard_read.py records " +
                               dir.File("corrupt.tfevents"),
                           &out),
            1);
  EXPECT_NE(out.find("failed event crc32 check"), std::string::npos) << out;

  // output.tensorboard = false: no tb/.
  ASSERT_EQ(test::RunShell(test::BinaryDir() + "/moa train --config " + test::SourceDir() +
                               "/configs/tiny.ini --output.tensorboard=false --output.dir=" +
                               dir.File("quiet"),
                           &out),
            0)
      << out;
  EXPECT_FALSE(fs::exists(dir.File("quiet/tb")));
}

int Count(const std::string& text, const std::string& pattern) {
  const std::regex re(pattern);
  return static_cast<int>(
      std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator()));
}

// Training-domain validation's step, from the records themselves: the highest mean `out`
// accuracy of the training domains (all but `test_env`), the earliest on ties.
int64_t SelectedStep(const std::vector<nlohmann::json>& records, int test_env) {
  double best = -1;
  int64_t step = -1;
  for (const nlohmann::json& record : records) {
    double sum = 0;
    int n = 0;
    for (int e = 0; e < 6; ++e) {
      if (e == test_env) continue;
      sum += record["env" + std::to_string(e) + "_out_acc"].get<double>(), ++n;
    }
    if (sum / n > best) best = sum / n, step = record["step"].get<int64_t>();
  }
  return step;
}

// A sweep's run whose results.jsonl is malformed is left out of the page with a warning naming
// the file, as moa collect leaves it out of its tables.
TEST(HtmlReportTest, ASweepRunLeftOutIsNamed) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(
      test::RunShell(test::BinaryDir() + "/moa train --config " + test::SourceDir() +
                         "/configs/tiny.ini --train.steps=2 --output.dir=" + dir.File("sweep/good"),
                     &out),
      0)
      << out;
  std::filesystem::create_directories(dir.File("sweep/broken"));
  std::ofstream(dir.File("sweep/broken/results.jsonl")) << "{\"step\": 0, \"env0_in_acc\n";
  ASSERT_EQ(test::RunShell(test::BinaryDir() + "/moa report " + dir.File("sweep") + " --output " +
                               dir.File("report.html"),
                           &out),
            0)
      << out;
  EXPECT_NE(out.find("warning: " + dir.File("sweep/broken/results.jsonl")), std::string::npos)
      << out;
  EXPECT_NE(out.find("(0 runs, 1 sweeps)"), std::string::npos) << out;
}

TEST(HtmlReportTest, ChromiumRendersEveryCurvePointSelectedStepAndHeatMapCell) {
  test::TempDir dir;
  std::string out;
  const std::string train = test::BinaryDir() + "/moa train --config " + test::SourceDir() +
                            "/configs/tiny.ini --train.steps=30 --train.checkpoint_freq=5 "
                            "--optim.lr=1e-2 --output.dir=";
  ASSERT_EQ(test::RunShell(train + dir.File("sweep/moa") + " --adapter.method=moa", &out), 0)
      << out;
  ASSERT_EQ(test::RunShell(train + dir.File("sweep/lora"), &out), 0) << out;
  const std::string html = dir.File("report.html");
  ASSERT_EQ(
      test::RunShell(test::BinaryDir() + "/moa report " + dir.File("sweep/moa") + " " +
                         dir.File("sweep/lora") + " " + dir.File("sweep") + " --output " + html,
                     &out),
      0)
      << out;
  EXPECT_NE(out.find("(2 runs, 1 sweeps)"), std::string::npos) << out;
  const std::string chromium =
      "chromium --headless --no-sandbox --disable-gpu --hide-scrollbars "
      "--enable-logging=stderr --v=0 ";
  // The page's DOM after its script ran, and Chromium's log, where console errors appear as
  // "Uncaught ...".
  ASSERT_EQ(test::RunShell("(" + chromium + "--dump-dom file://" + html + " >" +
                               dir.File("dom.html") + " 2>" + dir.File("console.log") + ")",
                           &out),
            0)
      << out;
  const std::string dom = ReadFile(dir.File("dom.html")).value_or("");
  const std::string console = ReadFile(dir.File("console.log")).value_or("");
  EXPECT_EQ(console.find("Uncaught"), std::string::npos) << console;
  EXPECT_NE(dom.find("data-ready=\"1\""), std::string::npos) << "the page's script did not finish";

  for (const char* run : {"moa", "lora"}) {
    SCOPED_TRACE(run);
    const std::string folder = dir.File(std::string("sweep/") + run);
    const std::vector<nlohmann::json> records = test::ReadJsonLines(folder + "/results.jsonl");
    ASSERT_EQ(records.size(), 7u);  // steps 0, 5, ..., 25, 29
    const size_t begin = dom.find("<section class=\"run\" data-run=\"" + folder + "\"");
    ASSERT_NE(begin, std::string::npos);
    const std::string section = dom.substr(begin, dom.find("</section>", begin) - begin);
    const size_t loss_at = section.find("data-kind=\"loss\"");
    const std::string accuracy = section.substr(0, loss_at);
    for (int e = 0; e < 6; ++e) {
      for (const char* split : {"in", "out"}) {
        const std::string series = "env" + std::to_string(e) + "_" + split;
        EXPECT_EQ(Count(accuracy, "<polyline class=\"curve\" data-series=\"" + series + "\""), 1)
            << series;
        EXPECT_EQ(Count(accuracy, "<circle class=\"point\" data-series=\"" + series + "\""),
                  static_cast<int>(records.size()))
            << series;
      }
    }
    EXPECT_EQ(Count(accuracy, "<polyline class=\"curve\""), 12);
    EXPECT_NE(accuracy.find("env5_in (test)"), std::string::npos);
    const std::string selected = std::to_string(SelectedStep(records, 5));
    EXPECT_EQ(Count(section, "class=\"selected-step\" data-step=\"" + selected + "\""), 2)
        << "accuracy and loss charts mark step " << selected;
    EXPECT_EQ(Count(section, "class=\"selected-step\""), 2);
    const int layers = std::string(run) == "moa" ? 4 : 0;
    EXPECT_EQ(Count(section, "<svg class=\"heatmap\""), layers);
    EXPECT_EQ(Count(section, "<rect class=\"cell\""),
              layers * 4 * static_cast<int>(records.size()));
  }
  EXPECT_EQ(Count(dom, "<section class=\"sweep\""), 1);
  EXPECT_NE(dom.find("RotatedFashionMNIST"), std::string::npos);
  EXPECT_EQ(Count(dom, "<td>adapter.method</td><td>moa</td><td>lora</td>"), 2);  // diff and all

  // The screenshot shows the page: mostly white, but with many coloured pixels.
  ASSERT_EQ(test::RunShell(chromium + "--window-size=1200,2400 --screenshot=" +
                               dir.File("report.png") + " file://" + html,
                           &out),
            0)
      << out;
  MOA_ASSERT_OK_AND_ASSIGN(const data::RgbImage shot,
                           data::DecodeImageFile(dir.File("report.png")));
  EXPECT_EQ(shot.width, 1200);
  int64_t inked = 0;
  std::set<int> colours;
  for (size_t i = 0; i + 2 < shot.pixels.size(); i += 3) {
    const int r = shot.pixels[i], g = shot.pixels[i + 1], b = shot.pixels[i + 2];
    if (r + g + b < 3 * 240) ++inked;
    colours.insert((r << 16) | (g << 8) | b);
  }
  const double share = static_cast<double>(inked) / (shot.width * shot.height);
  EXPECT_GT(share, 0.02) << "a blank page";
  EXPECT_GT(colours.size(), 50u);
}

}  // namespace
}  // namespace moa
