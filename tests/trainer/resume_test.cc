// Exact resume after SIGKILL and after a stop signal, refusal of another configuration's
// checkpoint, adapter-only evaluation (`moa eval`), ensembles, and merged export (`moa export
// --merge`).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/safetensors.h"
#include "common/stop_signals.h"
#include "launch/options.h"
#include "moa/peft.h"
#include "moa/weights.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_config.h"
#include "trainer/evaluate.h"
#include "trainer/trainer.h"

namespace moa::trainer {
namespace {

std::string Moa() { return test::BinaryDir() + "/moa"; }

// Everything random on: MoA with router noise, Kronecker dropout, the auxiliary loss, prefetch;
// and SWAD, whose averages must survive the kill too.
std::vector<std::string> Args(const std::string& dir) {
  return {"train",
          "--config",
          test::SourceDir() + "/configs/tiny.ini",
          "--adapter.method=moa",
          "--moa.expert=kronecker",
          "--moa.phm_dim=8",
          "--moa.proj_dim=16",
          "--moa.aux_loss=true",
          "--data.workers=2",
          "--train.steps=40",
          "--train.checkpoint_freq=4",
          "--swad.enabled=true",
          "--output.dir=" + dir};
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

pid_t Spawn(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    std::string exe = Moa();
    argv.push_back(exe.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    freopen("/dev/null", "w", stderr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

std::string Join(const std::vector<std::string>& args) {
  std::string s;
  for (const std::string& a : args) s += " " + a;
  return s;
}

// A resumed run's results.jsonl and checkpoints equal the uninterrupted run's exactly: losses,
// accuracies and router statistics of every record (the SWAD record last), and every tensor of
// the selected, state and SWAD checkpoints.
void ExpectSameAsUninterrupted(const std::string& whole_dir, const std::string& resumed_dir) {
  const auto whole = Lines(whole_dir + "/results.jsonl");
  const auto resumed = Lines(resumed_dir + "/results.jsonl");
  ASSERT_EQ(whole.size(), resumed.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    auto a = nlohmann::json::parse(whole[i]);
    auto b = nlohmann::json::parse(resumed[i]);
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (it.key().find("loss") != std::string::npos ||
          it.key().find("_acc") != std::string::npos) {
        EXPECT_EQ(it.value().dump(), b[it.key()].dump()) << it.key() << " at record " << i;
      }
    }
    EXPECT_EQ(a["router"].dump(), b["router"].dump()) << "record " << i;
  }
  EXPECT_TRUE(nlohmann::json::parse(resumed.back()).value("swad", false))
      << "the SWAD record is last";
  for (const char* file : {"selected.safetensors", "state.safetensors", "swad.safetensors"}) {
    MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile x,
                             ReadSafetensors(whole_dir + "/checkpoints/" + file));
    MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile y,
                             ReadSafetensors(resumed_dir + "/checkpoints/" + file));
    for (const auto& [name, t] : x.tensors) {
      if (name.rfind("rng/", 0) == 0) continue;
      EXPECT_TRUE(torch::equal(t, y.tensors.at(name))) << file << " " << name;
    }
  }
}

TEST(ResumeTest, KilledRunResumedEqualsUninterrupted) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + Join(Args(dir.File("whole"))), &out), 0) << out;

  // Kill a second run with SIGKILL once it has written a few evaluations.
  const std::string killed = dir.File("killed");
  const pid_t pid = Spawn(Args(killed));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline &&
         Lines(killed + "/results.jsonl").size() < 4) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  ASSERT_FALSE(std::filesystem::exists(killed + "/done"));
  ASSERT_TRUE(std::filesystem::exists(killed + "/checkpoints/state.safetensors"));

  ASSERT_EQ(test::RunShell(Moa() + " train --resume " + killed, &out), 0) << out;
  EXPECT_TRUE(std::filesystem::exists(killed + "/done"));
  ExpectSameAsUninterrupted(dir.File("whole"), killed);
}

// SIGUSR1 (what Slurm's --signal and mpirun forward) mid-run: the run finishes its step, saves
// its full state (between evaluations: with the interval's loss and SWAD's open segment), exits
// with kPreemptedExitCode, and `--resume` continues it exactly. The signal comes at step 13,
// between the evaluations at 10 and 20 (MOA_INJECT_FAULT's `stop` sends it from inside the step,
// through the same handler).
TEST(ResumeTest, StoppedRunResumedEqualsUninterrupted) {
  test::TempDir dir;
  std::vector<std::string> whole = Args(dir.File("whole")), stopped = Args(dir.File("stopped"));
  whole.push_back("--train.checkpoint_freq=10");
  stopped.push_back("--train.checkpoint_freq=10");
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + Join(whole), &out), 0) << out;

  ASSERT_EQ(test::RunShell("MOA_INJECT_FAULT=0:13:stop " + Moa() + Join(stopped), &out),
            kPreemptedExitCode)
      << out;
  ASSERT_FALSE(std::filesystem::exists(dir.File("stopped/done")));
  ASSERT_FALSE(std::filesystem::exists(dir.File("stopped/moa.lock")))
      << "the lock outlived the run";
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile state,
                           ReadSafetensors(dir.File("stopped/checkpoints/state.safetensors")));
  ASSERT_EQ(std::stoll(state.metadata.at("moa_step")), 13) << out;

  ASSERT_EQ(test::RunShell(Moa() + " train --resume " + dir.File("stopped"), &out), 0) << out;
  ExpectSameAsUninterrupted(dir.File("whole"), dir.File("stopped"));
}

// A resume refused for its checkpoint (here: another adapter rank than the run's) writes nothing
// in the run folder: its config.ini, env.json and `done` stay, so the run still evaluates and
// resumes as it was.
TEST(ResumeTest, RefusedResumeLeavesTheRunAsItWas) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " train --config " + test::SourceDir() +
                               "/configs/tiny.ini --train.steps=6 --output.dir=" + run,
                           &out),
            0)
      << out;
  MOA_ASSERT_OK_AND_ASSIGN(const std::string config, ReadFile(run + "/config.ini"));
  MOA_ASSERT_OK_AND_ASSIGN(const std::string env, ReadFile(run + "/env.json"));
  EXPECT_NE(test::RunShell(Moa() + " train --resume " + run + " --adapter.rank=4", &out), 0);
  EXPECT_NE(out.find("state.safetensors"), std::string::npos) << out;
  EXPECT_EQ(*ReadFile(run + "/config.ini"), config);
  EXPECT_EQ(*ReadFile(run + "/env.json"), env);
  EXPECT_TRUE(std::filesystem::exists(run + "/done"));
  EXPECT_EQ(test::RunShell(Moa() + " eval --config " + run + "/config.ini --adapters " + run +
                               "/checkpoints/selected.safetensors",
                           &out),
            0)
      << out;
}

// Resuming needs the records up to the checkpoint: without results.jsonl (or with none of them
// left in it) the resume is an error naming the file, and the folder is left as it was.
TEST(ResumeTest, MissingRecordsAreAnErrorNamingTheFile) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  const std::string args = " train --config " + test::SourceDir() +
                           "/configs/tiny.ini --train.checkpoint_freq=5 --output.dir=" + run;
  std::string out;
  ASSERT_EQ(test::RunShell("MOA_INJECT_FAULT=0:7:stop " + Moa() + args, &out), kPreemptedExitCode)
      << out;
  MOA_ASSERT_OK_AND_ASSIGN(const std::string config, ReadFile(run + "/config.ini"));
  std::filesystem::rename(run + "/results.jsonl", dir.File("results.jsonl"));
  EXPECT_EQ(test::RunShell(Moa() + " train --resume " + run, &out), 1);
  EXPECT_NE(out.find(run + "/results.jsonl cannot be read: the run's checkpoint is at step 7"),
            std::string::npos)
      << out;
  EXPECT_EQ(*ReadFile(run + "/config.ini"), config);
  MOA_ASSERT_OK(WriteFileAtomically(run + "/results.jsonl", ""));
  EXPECT_EQ(test::RunShell(Moa() + " train --resume " + run, &out), 1);
  EXPECT_NE(out.find("results.jsonl holds no record"), std::string::npos) << out;
  MOA_ASSERT_OK(WriteFileAtomically(run + "/results.jsonl", "[1, 2]\n"));
  EXPECT_EQ(test::RunShell(Moa() + " train --resume " + run, &out), 1);
  EXPECT_NE(out.find("is not a record with a step"), std::string::npos) << out;
  // With the records back, the same resume finishes the run.
  std::filesystem::rename(dir.File("results.jsonl"), run + "/results.jsonl");
  EXPECT_EQ(test::RunShell(Moa() + " train --resume " + run, &out), 0) << out;
  EXPECT_TRUE(std::filesystem::exists(run + "/done"));
}

std::string Torch113Fixture() { return test::SourceDir() + "/tests/trainer/torch113_run"; }

// A copy of the 1.13 build's killed run folder in `dir` (the fixture stays untouched).
std::string CopyOfTorch113Run(const test::TempDir& dir) {
  const std::string run = dir.File("run");
  std::filesystem::copy(Torch113Fixture() + "/killed", run,
                        std::filesystem::copy_options::recursive);
  return run;
}

// A run folder written by the moa of Debian's LibTorch 1.13 (tests/trainer/torch113_run/README.md)
// resumes under this build and follows that build's uninterrupted run, so the Adam moments, the
// generator, the SWAD segments and the random backbone all came back. Losses agree to 1e-5
// relative (1.4e-7 measured; resuming with fresh Adam moments is 5e-3 off); an accuracy may differ
// by one image of its split, since a near-tie can fall either way between the two libraries'
// kernels.
TEST(ResumeTest, RunWrittenByTheLibTorch113BuildResumes) {
  test::TempDir dir;
  const std::string run = CopyOfTorch113Run(dir);
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " train --resume " + run, &out), 0) << out;
  EXPECT_NE(out.find("is read as random"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(run + "/done"));

  const auto uninterrupted = Lines(Torch113Fixture() + "/uninterrupted_results.jsonl");
  const auto resumed = Lines(run + "/results.jsonl");
  ASSERT_EQ(uninterrupted.size(), 8u);
  ASSERT_EQ(resumed.size(), uninterrupted.size());
  int compared = 0;
  for (size_t i = 0; i < uninterrupted.size(); ++i) {
    const auto a = nlohmann::json::parse(uninterrupted[i]);
    const auto b = nlohmann::json::parse(resumed[i]);
    EXPECT_EQ(a["step"], b["step"]) << "record " << i;
    EXPECT_EQ(a.value("swad", false), b.value("swad", false)) << "record " << i;
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!it.value().is_number_float()) continue;
      const double expected = it.value().get<double>();
      if (it.key().find("loss") != std::string::npos) {
        ASSERT_TRUE(b.contains(it.key())) << it.key() << " at record " << i;
        EXPECT_NEAR(b[it.key()].get<double>(), expected, 1e-5 * std::abs(expected))
            << it.key() << " at record " << i;
        ++compared;
      } else if (it.key().size() > 4 && it.key().compare(it.key().size() - 4, 4, "_acc") == 0) {
        ASSERT_TRUE(b.contains(it.key())) << it.key() << " at record " << i;
        // One image of the split: 96 in an in split, 24 in an out split.
        const double one_image =
            it.key().find("_in_acc") != std::string::npos ? 1.0 / 96 : 1.0 / 24;
        EXPECT_NEAR(b[it.key()].get<double>(), expected, one_image + 1e-12)
            << it.key() << " at record " << i;
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 8 * 24) << "every record's losses and accuracies";
}

// `moa eval` reads the 1.13 build's adapter checkpoint (its selected step, 0: one update from the
// initialisation) and its config.ini as above, and counts what that build recorded at that step,
// to within one image per split.
TEST(ResumeTest, AdaptersWrittenByTheLibTorch113BuildEvaluate) {
  test::TempDir dir;
  const std::string run = CopyOfTorch113Run(dir);
  std::string out;
  // (Only the table: the log lines go to /dev/null.)
  ASSERT_EQ(test::RunShell("(" + Moa() + " eval --config " + run + "/config.ini --adapters " + run +
                               "/checkpoints/selected.safetensors 2>/dev/null)",
                           &out),
            0)
      << out;
  std::ifstream selected_file(run + "/checkpoints/selected.json");
  const auto selected = nlohmann::json::parse(selected_file);
  nlohmann::json record;
  for (const std::string& line : Lines(run + "/results.jsonl")) {
    auto r = nlohmann::json::parse(line);
    if (r["step"] == selected["step"]) record = r;
  }
  ASSERT_FALSE(record.is_null()) << "no record of step " << selected["step"];
  std::istringstream table(out);
  std::string line;
  int rows = 0;
  while (std::getline(table, line)) {
    char domain[32], split[8], accuracy[32];
    int correct = 0, total = 0;
    if (std::sscanf(line.c_str(), "%31s %7s %31s %d / %d", domain, split, accuracy, &correct,
                    &total) != 5) {
      continue;
    }
    const std::string key = "env" + std::to_string(rows / 2) + "_" + split + "_acc";
    ASSERT_TRUE(record.contains(key)) << key;
    EXPECT_NEAR(correct, record[key].get<double>() * total, 1.0 + 1e-9) << key;
    ++rows;
  }
  EXPECT_EQ(rows, 12) << out;
}

TEST(ResumeTest, CheckpointOfAnotherConfigurationIsRefused) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " train --config " + test::SourceDir() +
                               "/configs/tiny.ini --train.steps=3 --output.dir=" + dir.File("r"),
                           &out),
            0)
      << out;
  EXPECT_NE(test::RunShell(Moa() + " train --resume " + dir.File("r") + " --adapter.rank=4", &out),
            0);
  EXPECT_NE(out.find("another configuration"), std::string::npos) << out;
  EXPECT_NE(out.find("lora.A"), std::string::npos) << out;
  EXPECT_NE(test::RunShell(Moa() + " train --resume " + dir.File("nothing"), &out), 0);
  EXPECT_NE(out.find("nothing"), std::string::npos) << out;
}

TEST(EvalTest, AdapterCheckpointEvaluatesAsDuringTrainingAndEnsemblesAverage) {
  test::TempDir dir;
  RunConfig config = test::TinyConfig(dir.File("run"), {"output.save=all"});
  MOA_ASSERT_OK_AND_ASSIGN(RunSummary summary, Train(config));
  const std::string last = dir.File("run/checkpoints/step11.safetensors");
  MOA_ASSERT_OK_AND_ASSIGN(auto scores, EvaluateAdapters(config, {last}));
  const nlohmann::json& record = summary.records.back();
  ASSERT_EQ(scores.size(), 12u);
  for (const DomainScore& s : scores) {
    const int env = static_cast<int>(&s - scores.data()) / 2;
    EXPECT_DOUBLE_EQ(s.accuracy(),
                     record["env" + std::to_string(env) + "_" + s.split + "_acc"].get<double>())
        << s.domain << " " << s.split;
  }
  // An ensemble of one checkpoint twice equals that checkpoint.
  MOA_ASSERT_OK_AND_ASSIGN(auto twice, EvaluateAdapters(config, {last, last}));
  for (size_t i = 0; i < scores.size(); ++i) EXPECT_EQ(twice[i].correct, scores[i].correct);
  // A file of another configuration is refused by name.
  RunConfig other = config;
  other.adapter.rank = 3;
  auto refused = EvaluateAdapters(other, {last});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("shape mismatch"), std::string::npos)
      << refused.status();
}

TEST(EnsembleTest, LogitsAreTheMeanOfTheMembersAndTheSharedPrefixChangesNothing) {
  test::TempDir dir;
  // Two runs with LoRA on the last block only (one backbone, two learning rates): the blocks
  // before it are shared.
  std::vector<std::shared_ptr<ClassifierImpl>> models;
  for (int run : {0, 1}) {
    RunConfig config =
        test::TinyConfig(dir.File("r" + std::to_string(run)),
                         {"adapter.blocks=last:1", "train.steps=4", "data.batch_size=4",
                          run == 0 ? "optim.lr=1e-3" : "optim.lr=5e-3"});
    MOA_ASSERT_OK(Train(config));
    MOA_ASSERT_OK_AND_ASSIGN(data::DatasetInfo info, data::LookupDataset(config.data.dataset));
    MOA_ASSERT_OK_AND_ASSIGN(auto model, BuildModel(config, info));
    MOA_ASSERT_OK(LoadTrainable(
        *model, dir.File("r" + std::to_string(run) + "/checkpoints/selected.safetensors")));
    model->eval();
    models.push_back(model);
  }
  auto* vit = dynamic_cast<VisionTransformerImpl*>(models[0].get());
  ASSERT_NE(vit, nullptr);
  EXPECT_EQ(vit->FirstAdaptedBlock(), 1);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::rand({5, 1, 28, 28});
  const torch::Tensor mean = (models[0]->forward(x) + models[1]->forward(x)) / 2.0;
  ASSERT_FALSE(torch::allclose(models[0]->forward(x), models[1]->forward(x)))
      << "the members must differ";
  EXPECT_TRUE(torch::allclose(EnsembleLogits(models, x, /*share_prefix=*/false), mean, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(EnsembleLogits(models, x, /*share_prefix=*/true), mean, 1e-6, 1e-6));
  EXPECT_TRUE(
      torch::allclose(EnsembleLogits({models[0]}, x, true), models[0]->forward(x), 1e-6, 1e-6));
}

TEST(ExportTest, MergedBackboneEqualsTheAdaptedModel) {
  test::TempDir dir;
  RunConfig config = test::TinyConfig(dir.File("run"), {"adapter.targets=qkv,proj,fc1,fc2"});
  MOA_ASSERT_OK(Train(config));
  const std::string adapters = dir.File("run/checkpoints/selected.safetensors");
  MOA_ASSERT_OK(ExportMerged(config, adapters, dir.File("merged.safetensors")));
  MOA_ASSERT_OK_AND_ASSIGN(data::DatasetInfo info, data::LookupDataset(config.data.dataset));
  MOA_ASSERT_OK_AND_ASSIGN(auto adapted, BuildModel(config, info));
  MOA_ASSERT_OK(LoadTrainable(*adapted, adapters));
  RunConfig plain = config;
  plain.adapter.method = "full";
  MOA_ASSERT_OK_AND_ASSIGN(auto merged, BuildModel(plain, info));
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile file, ReadSafetensors(dir.File("merged.safetensors")));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : merged->named_parameters()) p.value().copy_(file.tensors.at(p.key()));
  }
  EXPECT_EQ(file.tensors.size(), merged->named_parameters().size()) << "no adapter tensors remain";
  adapted->eval();
  merged->eval();
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::rand({6, 1, 28, 28});
    EXPECT_LE((adapted->forward(x) - merged->forward(x)).abs().max().item<double>(), 1e-5);
  }
  // MoA adapters cannot be folded.
  RunConfig moa_config =
      test::TinyConfig(dir.File("moa"), {"adapter.method=moa", "moa.proj_dim=8", "train.steps=2"});
  MOA_ASSERT_OK(Train(moa_config));
  const absl::Status refused = ExportMerged(
      moa_config, dir.File("moa/checkpoints/selected.safetensors"), dir.File("x.safetensors"));
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("only LoRA"), std::string::npos) << refused;
}

}  // namespace
}  // namespace moa::trainer
