// The one command-line parser (launch/cli.h) on its own: `--x=v` and `--x v` alike, lists,
// switches, configuration keys in order, old spellings with their deprecation line, and errors
// that name the option and the command.
#include "launch/cli.h"

#include <sstream>

#include "tests/support/test_support.h"

namespace moa::launch {
namespace {

// A command with one flag of every kind and the configuration keys.
struct Demo {
  std::string config;
  int64_t count = 0;
  std::vector<std::string> adapters;
  bool merge = false;
  std::vector<std::string> overrides;
  CommandLine cli{"demo", "usage: moa demo [flags]\n"};

  Demo() {
    cli.AddString("config", "FILE", "the configuration", &config);
    cli.AddInteger("count", "N", "how many", 1, &count);
    cli.AddList("adapters", "FILE", "checkpoints", &adapters);
    cli.AddSwitch("merge", "fold", &merge);
    cli.AddConfigKeys(&overrides);
    cli.AddDeprecated("cfg", "config");
  }
  std::string Error(const std::vector<std::string>& args) {
    std::ostringstream notes;
    const absl::Status status = cli.Parse(args, notes);
    EXPECT_FALSE(status.ok());
    return std::string(status.message());
  }
};

TEST(CommandLineTest, BothValueFormsListsSwitchesAndConfigKeysInOrder) {
  Demo demo;
  std::ostringstream notes;
  MOA_ASSERT_OK(
      demo.cli.Parse({"--config=a.ini", "--count", "3", "--optim.lr", "0.1", "--adapters", "x", "y",
                      "--merge", "--train.steps=4", "--data.test_envs=", "--optim.lr=0.2"},
                     notes));
  EXPECT_EQ(demo.config, "a.ini");
  EXPECT_EQ(demo.count, 3);
  EXPECT_EQ(demo.adapters, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(demo.merge);
  EXPECT_EQ(demo.overrides, (std::vector<std::string>{"optim.lr=0.1", "train.steps=4",
                                                      "data.test_envs=", "optim.lr=0.2"}));
  EXPECT_EQ(notes.str(), "");

  Demo other;
  MOA_ASSERT_OK(other.cli.Parse({"--config", "b.ini", "--count=7", "--adapters=z"}, notes));
  EXPECT_EQ(other.config, "b.ini");
  EXPECT_EQ(other.count, 7);
  EXPECT_EQ(other.adapters, (std::vector<std::string>{"z"}));
  EXPECT_FALSE(other.merge);
}

TEST(CommandLineTest, ErrorsNameTheOptionAndTheCommand) {
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--bogus", "1"}, "unknown option --bogus (see `moa demo --help`)"},
      {{"--conf", "a.ini"}, "unknown option --conf"},  // no abbreviations
      {{"--optim.learning_rate=1"}, "unknown option --optim.learning_rate"},
      {{"--config"}, "--config needs a value (see `moa demo --help`)"},
      {{"--count", "three"}, "--count needs an integer of at least 1, got 'three'"},
      {{"--count=0"}, "--count needs an integer of at least 1, got '0'"},
      {{"--merge=yes"}, "--merge takes no value"},
      {{"--config", "a.ini", "stray"}, "unexpected argument 'stray' (see `moa demo --help`)"},
      {{"-c", "a.ini"}, "unexpected argument '-c'"},
  };
  for (const auto& [args, message] : cases) {
    Demo demo;
    const std::string error = demo.Error(args);
    EXPECT_NE(error.find(message), std::string::npos) << error << "\nexpected: " << message;
  }
}

TEST(CommandLineTest, OldSpellingWorksWithADeprecationLine) {
  Demo demo;
  std::ostringstream notes;
  MOA_ASSERT_OK(demo.cli.Parse({"--cfg", "old.ini"}, notes));
  EXPECT_EQ(demo.config, "old.ini");
  EXPECT_EQ(notes.str(), "moa demo: --cfg is deprecated; use --config\n");
}

TEST(CommandLineTest, HelpListsFlagsOldSpellingsAndConfigKeys) {
  Demo demo;
  const std::string help = demo.cli.Help();
  for (const char* text : {"usage: moa demo [flags]", "  --config FILE ", "  --count N ",
                           "  --adapters FILE [FILE ...] ", "  --merge ", "  --cfg ",
                           "now --config", "[optim]", "  --optim.lr ", "[slurm]"}) {
    EXPECT_NE(help.find(text), std::string::npos) << text << "\n" << help;
  }
  EXPECT_TRUE(CommandLine::AsksForHelp({"--config", "x", "--help"}));
  EXPECT_TRUE(CommandLine::AsksForHelp({"-h"}));
  EXPECT_FALSE(CommandLine::AsksForHelp({"--config", "help"}));
}

}  // namespace
}  // namespace moa::launch
