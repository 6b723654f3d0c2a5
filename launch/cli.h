// The one command-line parser of every `moa` subcommand, on Boost.Program_options. Plain flags
// (`--config FILE`, `--adapters A [B ...]`) mean the same in every command; configuration keys are
// spelled `--section.key`; both `--flag value` and `--flag=value` work; old spellings still work
// with a deprecation line on stderr.
//
//   CommandLine cli("export", "usage: moa export --merge --adapters A --output FILE ...");
//   cli.AddString("output", "FILE", "where the merged weights go", &output);
//   cli.AddConfigKeys(&overrides);
//   if (std::optional<int> exit_code = cli.ParseOrExitCode(args)) return *exit_code;
#pragma once

#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <absl/status/status.h>

namespace moa::launch {

/// The flags of one subcommand and where their values go.
class CommandLine {
 public:
  /// `command` names the subcommand in messages ("export", "data check"); `usage` opens --help.
  CommandLine(std::string command, std::string usage);

  /// --name VALUE.
  void AddString(const std::string& name, const std::string& value_name, const std::string& help,
                 std::string* value);
  /// --name N: an integer of at least `minimum`.
  void AddInteger(const std::string& name, const std::string& value_name, const std::string& help,
                  int64_t minimum, int64_t* value);
  /// --name, without a value.
  void AddSwitch(const std::string& name, const std::string& help, bool* value);
  /// --name A [B ...]: the words up to the next option.
  void AddList(const std::string& name, const std::string& value_name, const std::string& help,
               std::vector<std::string>* values);
  /// Every configuration key not added above, as --section.key VALUE: each occurrence is appended
  /// to `overrides` as "section.key=value" in command-line order. --help lists the keys.
  void AddConfigKeys(std::vector<std::string>* overrides);
  /// Words that are not options (e.g. `moa report RUN_DIR ...`) go to `values`; without this,
  /// such a word is an error.
  void AddPositional(std::vector<std::string>* values);
  /// `old_name` (an earlier spelling) is accepted as `new_name`, with one line on stderr saying so.
  void AddDeprecated(const std::string& old_name, const std::string& new_name);
  /// Text --help prints after the flags (and the configuration keys).
  void AddHelpEpilogue(const std::string& text);

  /// Parses the words after the command. Errors name the option and the command: unknown options,
  /// missing values, values of the wrong type, words that belong to no option. Deprecation lines go
  /// to `notes`.
  absl::Status Parse(const std::vector<std::string>& args, std::ostream& notes = std::cerr);

  /// Whether `args` ask for help (--help or -h).
  static bool AsksForHelp(const std::vector<std::string>& args);

  /// --help's text: the usage, every flag, the old spellings and, with AddConfigKeys, every
  /// configuration key with its default.
  std::string Help() const;

  /// What a command's entry does: prints Help() and returns 0 when asked for help, prints
  /// "moa <command>: <error>" and returns 2 when Parse fails, and returns nullopt to go on.
  std::optional<int> ParseOrExitCode(const std::vector<std::string>& args);

 private:
  struct Flag {
    std::string name;
    std::string value_name;  // empty for a switch
    std::string help;
    bool list = false;
    // Takes the option's words; an error names what was wrong with them.
    std::function<absl::Status(const std::vector<std::string>& words)> take;
  };
  void Add(Flag flag);
  const Flag* Find(const std::string& name) const;

  std::string command_;
  std::string usage_;
  std::string epilogue_;
  std::vector<Flag> flags_;
  std::map<std::string, std::string> deprecated_;  // old spelling -> new
  std::vector<std::string>* overrides_ = nullptr;
  std::vector<std::string>* positional_ = nullptr;
};

}  // namespace moa::launch
