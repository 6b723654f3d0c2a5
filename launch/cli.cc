#include "launch/cli.h"

#include <absl/strings/match.h>
#include <absl/strings/numbers.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <set>

#include "launch/option_table.h"
#include "launch/options.h"

namespace moa::launch {
namespace {

namespace po = boost::program_options;

// Boost's name for the words that belong to no option.
constexpr const char* kStrayWords = "<argument>";

// One help line: "  --name VALUE   help".
std::string HelpLine(const std::string& flag, const std::string& help) {
  char line[1024];
  std::snprintf(line, sizeof(line), "  %-28s %s\n", flag.c_str(), help.c_str());
  return line;
}

// Boost refuses an empty value after '=' (`--data.test_envs=` clears the list); the same value
// as the next word it takes.
std::vector<std::string> SplitEmptyValues(const std::vector<std::string>& args) {
  std::vector<std::string> words;
  for (const std::string& a : args) {
    if (absl::StartsWith(a, "--") && absl::EndsWith(a, "=") &&
        std::count(a.begin(), a.end(), '=') == 1) {
      words.push_back(a.substr(0, a.size() - 1));
      words.emplace_back();
    } else {
      words.push_back(a);
    }
  }
  return words;
}

}  // namespace

CommandLine::CommandLine(std::string command, std::string usage)
    : command_(std::move(command)), usage_(std::move(usage)) {}

void CommandLine::Add(Flag flag) { flags_.push_back(std::move(flag)); }

const CommandLine::Flag* CommandLine::Find(const std::string& name) const {
  for (const Flag& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

void CommandLine::AddString(const std::string& name, const std::string& value_name,
                            const std::string& help, std::string* value) {
  Add({name, value_name, help, false, [value](const std::vector<std::string>& words) {
         *value = words.empty() ? std::string() : words.back();
         return absl::OkStatus();
       }});
}

void CommandLine::AddInteger(const std::string& name, const std::string& value_name,
                             const std::string& help, int64_t minimum, int64_t* value) {
  Add({name, value_name, help, false,
       [name, minimum, value](const std::vector<std::string>& words) {
         const std::string text = words.empty() ? std::string() : words.back();
         if (!absl::SimpleAtoi(text, value) || *value < minimum) {
           return absl::InvalidArgumentError("--" + name + " needs an integer of at least " +
                                             std::to_string(minimum) + ", got '" + text + "'");
         }
         return absl::OkStatus();
       }});
}

void CommandLine::AddSwitch(const std::string& name, const std::string& help, bool* value) {
  Add({name, "", help, false, [value](const std::vector<std::string>&) {
         *value = true;
         return absl::OkStatus();
       }});
}

void CommandLine::AddList(const std::string& name, const std::string& value_name,
                          const std::string& help, std::vector<std::string>* values) {
  Add({name, value_name + " [" + value_name + " ...]", help, true,
       [values](const std::vector<std::string>& words) {
         values->insert(values->end(), words.begin(), words.end());
         return absl::OkStatus();
       }});
}

void CommandLine::AddConfigKeys(std::vector<std::string>* overrides) { overrides_ = overrides; }

void CommandLine::AddPositional(std::vector<std::string>* values) { positional_ = values; }

void CommandLine::AddDeprecated(const std::string& old_name, const std::string& new_name) {
  deprecated_[old_name] = new_name;
}

void CommandLine::AddHelpEpilogue(const std::string& text) { epilogue_ += text; }

bool CommandLine::AsksForHelp(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(),
                     [](const std::string& a) { return a == "--help" || a == "-h"; });
}

absl::Status CommandLine::Parse(const std::vector<std::string>& args, std::ostream& notes) {
  const std::string see = " (see `moa " + command_ + " --help`)";
  po::options_description description;
  std::set<std::string> config_keys;
  auto describe = [&description](const std::string& name, bool has_value, bool list) {
    if (!has_value) {
      description.add_options()(name.c_str(), po::bool_switch());
    } else if (list) {
      description.add_options()(name.c_str(), po::value<std::vector<std::string>>()->multitoken());
    } else {
      description.add_options()(name.c_str(), po::value<std::string>());
    }
  };
  for (const Flag& flag : flags_) describe(flag.name, !flag.value_name.empty(), flag.list);
  if (overrides_ != nullptr) {
    for (const Option& option : OptionTable()) {
      if (Find(option.name) != nullptr) continue;
      describe(option.name, true, false);
      config_keys.insert(option.name);
    }
  }
  for (const auto& [old_name, new_name] : deprecated_) {
    const Flag* flag = Find(new_name);
    describe(old_name, flag == nullptr || !flag->value_name.empty(), flag != nullptr && flag->list);
  }
  description.add_options()(kStrayWords, po::value<std::vector<std::string>>());
  po::positional_options_description stray;
  stray.add(kStrayWords, -1);

  po::parsed_options parsed(&description);
  try {
    // Long options only, never abbreviated: `--out` is not `--output`.
    parsed = po::command_line_parser(SplitEmptyValues(args))
                 .options(description)
                 .positional(stray)
                 .style(po::command_line_style::allow_long |
                        po::command_line_style::long_allow_adjacent |
                        po::command_line_style::long_allow_next)
                 .run();
  } catch (const po::unknown_option& e) {
    return absl::InvalidArgumentError("unknown option " + e.get_option_name() + see);
  } catch (const po::invalid_command_line_syntax& e) {
    if (e.kind() == po::invalid_syntax::missing_parameter) {
      return absl::InvalidArgumentError(e.get_option_name() + " needs a value" + see);
    }
    if (e.kind() == po::invalid_syntax::extra_parameter) {
      return absl::InvalidArgumentError(e.get_option_name() + " takes no value" + see);
    }
    return absl::InvalidArgumentError(e.what() + see);
  } catch (const po::error& e) {
    return absl::InvalidArgumentError(e.what() + see);
  }
  for (const po::option& option : parsed.options) {
    if ((option.string_key == kStrayWords || option.position_key >= 0) && positional_) {
      positional_->insert(positional_->end(), option.value.begin(), option.value.end());
      continue;
    }
    if (option.string_key == kStrayWords || option.position_key >= 0) {
      const std::string word = option.value.empty() ? std::string() : option.value.front();
      return absl::InvalidArgumentError("unexpected argument '" + word + "'" + see);
    }
    std::string name = option.string_key;
    if (auto old = deprecated_.find(name); old != deprecated_.end()) {
      notes << "moa " << command_ << ": --" << name << " is deprecated; use --" << old->second
            << "\n";
      name = old->second;
    }
    if (config_keys.count(name)) {
      overrides_->push_back(name + "=" + (option.value.empty() ? "" : option.value.back()));
      continue;
    }
    const Flag* flag = Find(name);
    if (flag == nullptr) return absl::InvalidArgumentError("unknown option --" + name + see);
    const absl::Status taken = flag->take(option.value);
    if (!taken.ok()) return absl::InvalidArgumentError(std::string(taken.message()) + see);
  }
  return absl::OkStatus();
}

std::string CommandLine::Help() const {
  std::string text = usage_ + "\nflags (--flag VALUE or --flag=VALUE):\n";
  for (const Flag& flag : flags_) {
    text += HelpLine("--" + flag.name + (flag.value_name.empty() ? "" : " " + flag.value_name),
                     flag.help);
  }
  text += HelpLine("--help", "this text");
  if (!deprecated_.empty()) {
    text += "\nold spellings, still accepted (deprecated):\n";
    for (const auto& [old_name, new_name] : deprecated_) {
      text += HelpLine("--" + old_name, "now --" + new_name);
    }
  }
  if (overrides_ != nullptr) {
    text +=
        "\nconfiguration options: `key = value` in the INI file's [section], or on the command "
        "line\n--section.key=VALUE or --section.key VALUE (the command line wins):\n" +
        OptionsHelp();
  }
  return text + epilogue_;
}

std::optional<int> CommandLine::ParseOrExitCode(const std::vector<std::string>& args) {
  if (AsksForHelp(args)) {
    std::printf("%s", Help().c_str());
    return 0;
  }
  const absl::Status parsed = Parse(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "moa %s: %s\n", command_.c_str(), std::string(parsed.message()).c_str());
    return 2;
  }
  return std::nullopt;
}

}  // namespace moa::launch
