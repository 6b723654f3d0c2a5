// libFuzzer target: configuration loading (launch/options.h: the INI file, --section.key=value
// overrides, every key's check and the cross-key rules) and the command line every subcommand
// parses (launch/cli.h). The input is the INI file, then optionally a line "%%" followed by the
// command-line words, one a line. A configuration that loads must load again from its own
// resolved INI text, to the same text: that is what `moa train --resume` reads back.
#include <cstdio>
#include <cstdlib>

#include "fuzz/fuzz_input.h"
#include "launch/cli.h"
#include "launch/options.h"

namespace {

// The flags of train, pretrain, eval and export together, and every configuration key.
absl::Status ParseWords(const std::vector<std::string>& words,
                        std::vector<std::string>* overrides) {
  std::string config, resume, output;
  std::vector<std::string> adapters;
  bool merge = false;
  moa::launch::CommandLine cli("train", "usage: fuzz");
  cli.AddString("config", "FILE", "", &config);
  cli.AddString("resume", "RUN_DIR", "", &resume);
  cli.AddList("adapters", "FILE", "", &adapters);
  cli.AddSwitch("merge", "", &merge);
  cli.AddString("output", "FILE", "", &output);
  cli.AddConfigKeys(overrides);
  cli.AddDeprecated("output_dir", "output.dir");
  return cli.Parse(words, moa::fuzz::NullStream());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static moa::fuzz::MemoryFile ini_file;
  static moa::fuzz::MemoryFile resolved_file;
  std::string ini;
  std::vector<std::string> words;
  bool in_words = false;
  for (const std::string& line : moa::fuzz::SplitLines(moa::fuzz::InputText(data, size))) {
    if (in_words) {
      words.push_back(line);
    } else if (line == "%%") {
      in_words = true;
    } else {
      ini += line + "\n";
    }
  }
  std::vector<std::string> overrides;
  if (!ParseWords(words, &overrides).ok()) return 0;
  ini_file.Write(ini);
  const auto config = moa::launch::LoadLaunchConfig(ini_file.Path(), overrides);
  if (!config.ok()) return 0;
  resolved_file.Write(config->run.resolved_ini);
  const auto reloaded = moa::launch::LoadLaunchConfig(resolved_file.Path(), {});
  if (!reloaded.ok() || reloaded->run.resolved_ini != config->run.resolved_ini) {
    std::fprintf(stderr, "the resolved configuration does not load back to itself: %s\n%s\n",
                 reloaded.ok() ? "it differs" : std::string(reloaded.status().message()).c_str(),
                 config->run.resolved_ini.c_str());
    std::abort();
  }
  return 0;
}
