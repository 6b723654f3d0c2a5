// Configuration: INI + overrides, and every kind of bad value named with its key and origin.
#include <absl/strings/match.h>

#include <filesystem>
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
  MOA_ASSERT_OK_AND_ASSIGN(
      trainer::RunConfig config,
      LoadConfig(Ini("[optim]\nlr = 0.01\n[data]\ntest_envs = 1,3\n[model]\nbackbone = random\n"),
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

// Files named relative to the folder a run starts in are kept absolute (config.ini is read again
// on resume, maybe from elsewhere); "random" is not a file, and output.dir is left as given.
TEST_F(OptionsTest, FilePathsAreKeptAbsolute) {
  const std::string here = std::filesystem::current_path().string();
  MOA_ASSERT_OK_AND_ASSIGN(
      trainer::RunConfig config,
      LoadConfig(Ini("[model]\nbackbone = weights/b.safetensors\n[data]\ndata_dir = x/../pacs\n"),
                 {"--output.dir=runs/a"}));
  EXPECT_EQ(config.model.backbone, here + "/weights/b.safetensors");
  EXPECT_EQ(config.data.data_dir, here + "/pacs");
  EXPECT_EQ(config.output.dir, "runs/a");
  EXPECT_NE(config.resolved_ini.find("backbone = " + here + "/weights/b.safetensors\n"),
            std::string::npos)
      << config.resolved_ini;
  MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig random,
                           LoadConfig(Ini("[model]\nbackbone = random\n"), {}));
  EXPECT_EQ(random.model.backbone, "random");
  EXPECT_EQ(random.data.data_dir, "");
}

TEST_F(OptionsTest, UnknownKeyNamesKeyAndFile) {
  const std::string message = Error("[optim]\nlearning_rate = 0.1\n");
  EXPECT_NE(message.find("optim.learning_rate"), std::string::npos) << message;
  EXPECT_NE(message.find(dir_.File("c.ini")), std::string::npos) << message;
  EXPECT_NE(Error("", {"--optim.lr_typo=1"}).find("optim.lr_typo"), std::string::npos);
}

// A folder given as the configuration (an ifstream opens it and reads nothing) is refused with a
// hint at the run's config.ini, not trained with the defaults.
TEST_F(OptionsTest, AFolderIsNotAConfigurationFile) {
  auto result = LoadConfig(dir_.path(), {});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(dir_.path() + " is a folder"), std::string::npos)
      << result.status();
  EXPECT_NE(result.status().message().find(dir_.path() + "/config.ini"), std::string::npos);
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
  // Rank counts whose product would overflow int64 (2^62 x 4 wrapped to 0, and the batch size's
  // remainder by it stopped the process).
  m = Error("[parallel]\ndp = 4611686018427387904\nep = 4\n");
  EXPECT_NE(m.find("parallel.dp: must lie in [0, 1048576]"), std::string::npos) << m;
  m = Error("", {"--slurm.ntasks_per_node=3037000500"});
  EXPECT_NE(m.find("slurm.ntasks_per_node: must lie in [1, 1048576]"), std::string::npos) << m;
}

TEST_F(OptionsTest, CrossKeyRules) {
  // Kronecker blocks: phm_dim 64 cannot split a width-32 qkv (32 -> 96) or fc2 (128 -> 32); 8
  // splits both, for MoA's Kronecker experts too.
  std::string m = Error("[model]\ndim = 32\nheads = 2\n[adapter]\nmethod = kadaptation\n");
  EXPECT_NE(m.find("moa.phm_dim = 64 must divide the in and out features of every adapted "
                   "Linear, but qkv is 32 -> 96"),
            std::string::npos)
      << m;
  m = Error(
      "[model]\ndim = 32\nheads = 2\nbackbone = random\n[adapter]\nmethod = moa\ntargets = fc2\n"
      "[moa]\n"
      "expert = kronecker\nphm_dim = 64\ndispatch = routed\n");
  EXPECT_NE(m.find("fc2 is 128 -> 32"), std::string::npos) << m;
  MOA_ASSERT_OK(
      LoadConfig(Ini("[model]\ndim = 32\nheads = 2\nbackbone = random\n[adapter]\nmethod = moa\n"
                     "[moa]\nexpert = kronecker\nphm_dim = 8\ndispatch = routed\n"),
                 {})
          .status());
  m = Error("[data]\ndataset = PACS\ntest_envs = 4\n");
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
  m = Error("[adapter]\nmethod = moa\n[moa]\ndispatch = stacked\n[parallel]\nep = 2\n");
  EXPECT_NE(m.find("moa.dispatch = stacked runs every expert on every rank's tokens"),
            std::string::npos)
      << m;
  m = Error("[adapter]\nmethod = moa\n[moa]\nexpert = kronecker\ndispatch = stacked\n");
  EXPECT_NE(m.find("moa.dispatch = stacked stacks LoRA experts' ranks; moa.expert = kronecker"),
            std::string::npos)
      << m;
  m = Error("[adapter]\nmethod = moa\n[data]\nbatch_size = 30\n[parallel]\nep = 4\n");
  EXPECT_NE(m.find("parallel.ep = 4 expert-parallel ranks"), std::string::npos) << m;
  EXPECT_TRUE(LoadConfig("", {"adapter.method=moa", "moa.ranks=1,2,4", "parallel.ep=3",
                              "data.batch_size=30", "model.backbone=random"})
                  .ok());
}

// A frozen ViT backbone is CLIP's or, said explicitly, a random one; an empty model.backbone says
// how to get the weights. Full fine-tuning and the MNIST CNN need no weights.
TEST_F(OptionsTest, EmptyBackboneOfAFrozenViTSaysHowToGetWeights) {
  for (const char* method : {"lora", "attention", "kadaptation", "moa"}) {
    const std::string m = Error("[adapter]\nmethod = " + std::string(method) + "\n");
    EXPECT_NE(m.find("model.backbone is empty, but adapter.method = " + std::string(method)),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("CLIP ViT-B/16"), std::string::npos) << m;
    EXPECT_NE(m.find("scripts/convert_to_safetensors.py"), std::string::npos) << m;
    EXPECT_NE(m.find("model.backbone = random"), std::string::npos) << m;
    EXPECT_NE(m.find(dir_.File("c.ini")), std::string::npos) << m;
  }
  MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig random,
                           LoadConfig(Ini("[model]\nbackbone = random\n"), {}));
  EXPECT_EQ(random.model.backbone, "random");
  EXPECT_TRUE(LoadConfig("", {"adapter.method=full"}).ok());
  EXPECT_TRUE(LoadConfig("", {"model.arch=mnist_cnn", "adapter.method=full"}).ok());
  // The rule is checked after the others: a configuration with another problem hears of it.
  EXPECT_NE(Error("[model]\ndim = 100\nheads = 12\n").find("model.dim"), std::string::npos);
}

TEST_F(OptionsTest, MissingFileIsNamed) {
  auto result = LoadConfig(dir_.File("absent.ini"), {});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("absent.ini"), std::string::npos);
}

// The expectations below are spelled out here, from the README and configs/tiny.ini, not read
// from the option table: a wrong default or a key lost from the table fails them.
TEST_F(OptionsTest, DefaultsAreTheDocumentedValues) {
  const LaunchConfig defaults = DefaultConfig();
  const trainer::RunConfig& c = defaults.run;
  EXPECT_EQ(c.data.dataset, "RotatedFashionMNIST");
  EXPECT_EQ(c.data.source, "all");
  EXPECT_EQ(c.data.test_envs, (std::vector<int64_t>{0}));
  EXPECT_DOUBLE_EQ(c.data.holdout_fraction, 0.2);
  EXPECT_EQ(c.data.batch_size, 32);
  EXPECT_EQ(c.data.workers, 0);  // auto
  EXPECT_EQ(c.data.check, "header");
  EXPECT_EQ(c.model.arch, "vit");
  EXPECT_EQ(c.model.img_size, 224);
  EXPECT_EQ(c.model.patch_size, 16);
  EXPECT_EQ(c.model.dim, 768);
  EXPECT_EQ(c.model.depth, 12);
  EXPECT_EQ(c.model.heads, 12);
  EXPECT_DOUBLE_EQ(c.model.mlp_ratio, 4.0);
  EXPECT_TRUE(c.model.norm_pre);
  EXPECT_DOUBLE_EQ(c.model.norm_eps, 1e-5);
  EXPECT_EQ(c.adapter.method, "lora");
  EXPECT_EQ(c.adapter.rank, 2);
  EXPECT_EQ(c.adapter.targets, "qkv,proj");
  EXPECT_EQ(c.moa.ranks, (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(c.moa.top_k, 1);
  EXPECT_EQ(c.moa.proj_dim, 256);
  EXPECT_DOUBLE_EQ(c.moa.aux_weight, 0.01);
  EXPECT_DOUBLE_EQ(c.moa.kron_dropout, 0.5);
  EXPECT_EQ(c.optim.optimizer, "adam");
  EXPECT_DOUBLE_EQ(c.optim.lr, 5e-5);
  EXPECT_TRUE(c.optim.fused);
  EXPECT_EQ(c.train.steps, -1);
  EXPECT_EQ(c.train.checkpoint_freq, -1);
  EXPECT_EQ(c.train.log_every, 50);
  EXPECT_EQ(c.train.precision, "fp32");
  EXPECT_EQ(c.train.stop_grace, 300);
  EXPECT_EQ(c.eval.batch_size, 128);
  EXPECT_EQ(c.parallel.dp, 0);
  EXPECT_EQ(c.parallel.ep, 1);
  EXPECT_DOUBLE_EQ(c.parallel.bucket_mb, 4.0);
  EXPECT_EQ(c.swad.n_converge, 3);
  EXPECT_EQ(c.swad.n_tolerance, 6);
  EXPECT_DOUBLE_EQ(c.swad.tolerance_ratio, 0.3);
  EXPECT_EQ(c.output.dir, "runs/run");
  EXPECT_EQ(c.output.save, "selected");
  EXPECT_FALSE(c.output.overwrite);
  EXPECT_TRUE(c.output.tensorboard);
  EXPECT_EQ(defaults.slurm.nodes, 1);
  EXPECT_EQ(defaults.slurm.mpi, "pmix");
  EXPECT_EQ(defaults.slurm.job_name, "moa-sweep");
  EXPECT_EQ(defaults.slurm.signal, "USR1@180");
}

TEST_F(OptionsTest, ResolvedIniOfTheTinyConfiguration) {
  MOA_ASSERT_OK_AND_ASSIGN(
      LaunchConfig config,
      LoadLaunchConfig(test::SourceDir() + "/configs/tiny.ini", {"output.dir=/tmp/tiny"}));
  const std::string& ini = config.run.resolved_ini;
  // Whole sections: tiny.ini's values, the defaults of the keys it leaves out, in this order.
  const char* sections[] = {
      "[data]\ndataset = RotatedFashionMNIST\ndata_dir = \nsource = test\ntest_envs = 5\n"
      "holdout_fraction = 0.2\nbatch_size = 8\nmax_per_domain = 120\nworkers = 0\n"
      "check = header\nskip_corrupt = false\n\n",
      "[model]\narch = vit\nimg_size = 28\npatch_size = 7\ndim = 32\ndepth = 2\nheads = 2\n"
      "mlp_ratio = 2\nnorm_pre = true\nnorm_eps = 1e-05\nbackbone = random\nnum_classes = 0\n\n",
      "[adapter]\nmethod = lora\nrank = 2\nalpha = 0\nblocks = all\ntargets = qkv,proj\n\n",
      "[optim]\noptimizer = adam\nlr = 0.001\nweight_decay = 0\nfused = true\n\n",
      "[train]\nsteps = 12\ncheckpoint_freq = 5\nseed = 0\ntrial_seed = 0\nhparams_seed = 0\n"
      "threads = 1\nresume = \ncheck_replicas = false\nlog_every = 0\nprecision = fp32\n"
      "deterministic = false\nstop_grace = 300\n\n",
      "[output]\ndir = /tmp/tiny\nsave = selected\noverwrite = false\ntensorboard = true\n\n",
      "[slurm]\npartition = \naccount = \nnodes = 1\nntasks_per_node = 1\ngpus_per_task = 0\n"
      "cpus_per_task = 0\ntime = \nmpi = pmix\nmax_running = 0\njob_name = moa-sweep\n"
      "signal = USR1@180\n",
  };
  for (const char* section : sections) {
    EXPECT_NE(ini.find(section), std::string::npos) << section << "\nnot in\n" << ini;
  }
  // The resolved INI reads back to the same configuration.
  MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig again, LoadConfig(Ini(ini), {}));
  EXPECT_EQ(again.resolved_ini, ini);
}

TEST_F(OptionsTest, ResolvedIniHoldsEveryValueExactly) {
  // A learning rate of 17 significant digits reads back as the same double; text that config.ini
  // could not hold ('#' starts a comment there, a line break ends the value) is refused.
  MOA_ASSERT_OK_AND_ASSIGN(
      trainer::RunConfig config,
      LoadConfig(Ini("[model]\nbackbone = random\n"), {"--optim.lr=0.00012345678901234567"}));
  EXPECT_NE(config.resolved_ini.find("lr = 0.00012345678901234567\n"), std::string::npos)
      << config.resolved_ini;
  MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig again, LoadConfig(Ini(config.resolved_ini), {}));
  EXPECT_EQ(again.optim.lr, config.optim.lr);
  for (const std::string value : {"runs/a#b", "runs/a\nb"}) {
    const std::string m = Error("[model]\nbackbone = random\n", {"--output.dir=" + value});
    EXPECT_NE(m.find("output.dir: expected text without '#' or line breaks"), std::string::npos)
        << m;
  }
}

TEST_F(OptionsTest, HelpNamesKeysWithTheirDefaults) {
  const std::string help = OptionsHelp();
  // The line of `--key`, from the key to its end.
  auto line_of = [&help](const std::string& key) {
    const size_t start = help.find("  --" + key + " ");
    if (start == std::string::npos) return std::string("(no line for " + key + ")");
    return help.substr(start, help.find('\n', start) - start);
  };
  const std::pair<const char*, const char*> lines[] = {
      {"optim.lr", "learning rate (default: 5e-05)"},
      {"data.batch_size",
       "minibatch size per training domain, global over data-parallel ranks (default: 32)"},
      {"moa.ranks", "one expert per rank (comma list) (default: 1,2,4,8)"},
      {"model.norm_pre", "(default: true)"},
      {"data.data_dir", "(default: \"\")"},
      {"train.steps", "(-1: the dataset's default, 5001; DomainNet 15001) (default: -1)"},
      {"slurm.mpi", "(default: pmix)"},
  };
  for (const auto& [key, ending] : lines) {
    const std::string line = line_of(key);
    EXPECT_TRUE(absl::EndsWith(line, ending)) << key << ": " << line;
  }
  for (const char* section : {"[data]", "[model]", "[adapter]", "[moa]", "[optim]", "[train]",
                              "[eval]", "[parallel]", "[swad]", "[output]", "[slurm]"}) {
    EXPECT_NE(help.find(std::string("\n") + section + "\n"), std::string::npos) << section;
  }
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
    std::vector<std::string> overrides = {std::string("data.dataset=") + dataset,
                                          "model.backbone=random"};
    if (std::string(dataset) == "RotatedFashionMNIST") {
      overrides.push_back("model.img_size=28");
      overrides.push_back("model.patch_size=7");
    }
    MOA_ASSERT_OK_AND_ASSIGN(trainer::RunConfig c, LoadConfig("", overrides));
    EXPECT_EQ(c.train.steps, expected.first) << dataset;
    EXPECT_EQ(c.train.checkpoint_freq, expected.second) << dataset;
  }
  MOA_ASSERT_OK_AND_ASSIGN(
      trainer::RunConfig c,
      LoadConfig("", {"data.dataset=DomainNet", "train.steps=10", "model.backbone=random"}));
  EXPECT_EQ(c.train.steps, 10);
  EXPECT_FALSE(LoadConfig("", {"train.checkpoint_freq=0", "model.backbone=random"}).ok());
}

}  // namespace
}  // namespace moa::launch
