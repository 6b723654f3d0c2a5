// Configuration: INI + overrides, and every kind of bad value named with its key and origin.
#include <fstream>

#include "launch/options.h"
#include "tests/support/test_support.h"

namespace moa::launch {
namespace {

class OptionsTest : public ::testing::Test {
 protected:
  std::string Ini(const std::string& text) {
    const std::string path = dir_.File("c.ini");
    std::ofstream(path) << text;
    return path;
  }
  std::string Error(const std::string& ini, std::vector<std::string> overrides = {}) {
    auto result = LoadConfig(ini.empty() ? "" : Ini(ini), overrides);
    EXPECT_FALSE(result.ok());
    return std::string(result.status().message());
  }
  test::TempDir dir_;
};

TEST_F(OptionsTest, DefaultsFileAndOverridesInThatOrder) {
  MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig config,
                           LoadConfig(Ini("[optim]\nlr = 0.01\n[data]\ntest_envs = 1,3\n"),
                                      {"--optim.lr=0.5", "train.steps=7"}));
  EXPECT_DOUBLE_EQ(config.optim.lr, 0.5);
  EXPECT_EQ(config.train.steps, 7);
  EXPECT_EQ(config.data.test_envs, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(config.data.batch_size, 32);  // default
  EXPECT_EQ(config.optim.optimizer, "adam");
  // The resolved INI reads back to the same configuration.
  MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig again, LoadConfig(Ini(config.resolved_ini), {}));
  EXPECT_EQ(again.resolved_ini, config.resolved_ini);
}

TEST_F(OptionsTest, UnknownKeyNamesKeyAndFile) {
  const std::string message = Error("[optim]\nlearning_rate = 0.1\n");
  EXPECT_NE(message.find("optim.learning_rate"), std::string::npos) << message;
  EXPECT_NE(message.find(dir_.File("c.ini")), std::string::npos) << message;
  EXPECT_NE(Error("", {"--optim.lr_typo=1"}).find("optim.lr_typo"), std::string::npos);
}

TEST_F(OptionsTest, WrongTypesAndRangesNameTheKey) {
  std::string m = Error("[train]\nsteps = many\n");
  EXPECT_NE(m.find("train.steps"), std::string::npos) << m;
  EXPECT_NE(m.find("integer"), std::string::npos) << m;
  EXPECT_NE(m.find(dir_.File("c.ini")), std::string::npos) << m;
  m = Error("[train]\nsteps = 0\n");
  EXPECT_NE(m.find("train.steps"), std::string::npos) << m;
  m = Error("", {"--optim.lr=-0.1"});
  EXPECT_NE(m.find("optim.lr"), std::string::npos) << m;
  EXPECT_NE(m.find("command line"), std::string::npos) << m;
  m = Error("[model]\nnorm_pre = maybe\n");
  EXPECT_NE(m.find("model.norm_pre"), std::string::npos) << m;
  m = Error("[adapter]\nmethod = prompt\n");
  EXPECT_NE(m.find("adapter.method"), std::string::npos) << m;
  m = Error("[data]\nholdout_fraction = 1.5\n");
  EXPECT_NE(m.find("data.holdout_fraction"), std::string::npos) << m;
  m = Error("[optim]\nlr = nan\n");
  EXPECT_NE(m.find("optim.lr"), std::string::npos) << m;
}

TEST_F(OptionsTest, CrossKeyRules) {
  std::string m = Error("[data]\ndataset = PACS\ntest_envs = 4\n");
  EXPECT_NE(m.find("data.test_envs"), std::string::npos) << m;
  EXPECT_NE(m.find("PACS"), std::string::npos) << m;
  m = Error("[data]\nbatch_size = 30\n[parallel]\ndp = 4\n");
  EXPECT_NE(m.find("data.batch_size"), std::string::npos) << m;
  EXPECT_NE(m.find("parallel.dp"), std::string::npos) << m;
  m = Error("[model]\ndim = 100\nheads = 12\n");
  EXPECT_NE(m.find("model.dim"), std::string::npos) << m;
  m = Error("[model]\narch = mnist_cnn\n[adapter]\nmethod = lora\n");
  EXPECT_NE(m.find("adapter.method"), std::string::npos) << m;
  m = Error("[data]\ntest_envs = 0,1,2,3,4,5\n");
  EXPECT_NE(m.find("no training environment"), std::string::npos) << m;
  // Expert parallelism shards MoA experts: it needs MoA, and an expert for every rank.
  m = Error("[adapter]\nmethod = lora\n[parallel]\nep = 2\n");
  EXPECT_NE(m.find("parallel.ep"), std::string::npos) << m;
  EXPECT_NE(m.find("adapter.method = moa"), std::string::npos) << m;
  m = Error("[adapter]\nmethod = moa\n[moa]\nranks = 1,2,4\n[parallel]\nep = 4\n");
  EXPECT_NE(m.find("parallel.ep = 4 exceeds the 3 experts"), std::string::npos) << m;
  m = Error("[adapter]\nmethod = moa\n[moa]\ndispatch = dense\n[parallel]\nep = 2\n");
  EXPECT_NE(m.find("moa.dispatch = dense"), std::string::npos) << m;
  m = Error("[adapter]\nmethod = moa\n[data]\nbatch_size = 30\n[parallel]\nep = 4\n");
  EXPECT_NE(m.find("parallel.ep = 4 expert-parallel ranks"), std::string::npos) << m;
  EXPECT_TRUE(LoadConfig("", {"adapter.method=moa", "moa.ranks=1,2,4", "parallel.ep=3",
                              "data.batch_size=30"})
                  .ok());
}

TEST_F(OptionsTest, MissingFileIsNamed) {
  auto result = LoadConfig(dir_.File("absent.ini"), {});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("absent.ini"), std::string::npos);
}

TEST_F(OptionsTest, HelpListsEveryKeyOfTheResolvedIni) {
  const std::string help = OptionsHelp();
  const std::string ini = DefaultConfig().resolved_ini;
  std::string section;
  std::istringstream lines(ini);
  std::string line;
  int keys = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    if (line[0] == '[') {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    const std::string key = section + "." + line.substr(0, line.find(' '));
    EXPECT_NE(help.find("--" + key), std::string::npos) << key;
    ++keys;
  }
  EXPECT_GE(keys, 35);
  EXPECT_NE(help.find("(default: 5e-05)"), std::string::npos);
}

}  // namespace
}  // namespace moa::launch

namespace moa::launch {
namespace {

TEST(DatasetDefaultsTest, StepsAndCheckpointFrequencyFollowTheDataset) {
  // The MoA reference: 5001 steps, a checkpoint every 200; DomainNet 15001 and 1000; DomainBed's
  // 100 for the MNIST family.
  const std::pair<const char*, std::pair<int64_t, int64_t>> cases[] = {
      {"PACS", {5001, 200}},
      {"DomainNet", {15001, 1000}},
      {"TerraIncognita", {5001, 200}},
      {"RotatedFashionMNIST", {5001, 100}}};
  for (const auto& [dataset, expected] : cases) {
    std::vector<std::string> overrides = {std::string("data.dataset=") + dataset};
    if (std::string(dataset) == "RotatedFashionMNIST") {
      overrides.push_back("model.img_size=28");
      overrides.push_back("model.patch_size=7");
    }
    MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig c, LoadConfig("", overrides));
    EXPECT_EQ(c.train.steps, expected.first) << dataset;
    EXPECT_EQ(c.train.checkpoint_freq, expected.second) << dataset;
  }
  MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig c,
                           LoadConfig("", {"data.dataset=DomainNet", "train.steps=10"}));
  EXPECT_EQ(c.train.steps, 10);
  EXPECT_FALSE(LoadConfig("", {"train.checkpoint_freq=0"}).ok());
}

}  // namespace
}  // namespace moa::launch
