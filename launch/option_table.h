// The option table: every configuration key (`section.key`) declared once, with its help line,
// its check, and how its text becomes a value and back. A key's default is the value a
// default-constructed LaunchConfig holds (trainer/config.h and SlurmConfig), never a second copy.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "launch/options.h"

namespace moa::launch {

/// One configuration key.
struct Option {
  std::string name;  // section.key
  std::string help;
  /// Parses `text` into the configuration; returns what was wrong (empty when the value is good).
  std::function<std::string(const std::string& text, LaunchConfig& config)> parse;
  /// The key's value in `config` as INI text.
  std::function<std::string(const LaunchConfig& config)> print;
};

/// Every key in INI order (sections as in config.ini).
const std::vector<Option>& OptionTable();

/// The key's entry, or nullptr when no key has that name.
const Option* FindOption(const std::string& name);

}  // namespace moa::launch
