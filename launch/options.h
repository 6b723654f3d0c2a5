// The option table (docs/architecture.md, Configuration): every configuration key is declared once
// in options.cc with its default, help line and check. Values come from an INI file (sections and
// keys) and `--section.key=value` overrides; unknown keys, wrong types and out-of-range values are
// errors naming the key and where the value came from.
#pragma once

#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "trainer/config.h"

namespace moa::launch {

/// The configuration with every default and no file.
trainer::RunConfig DefaultConfig();

/// Reads `config_path` (may be empty: defaults only), then applies `overrides` of the form
/// `--section.key=value` (or `section.key=value`), then checks every value and the cross-key
/// rules (test envs exist, batch size divides among dp ranks, ...).
absl::StatusOr<trainer::RunConfig> LoadConfig(const std::string& config_path,
                                              const std::vector<std::string>& overrides);

/// Help text: every option with its default and help line, grouped by section.
std::string OptionsHelp();

/// The resolved configuration as INI text.
std::string ToIni(const trainer::RunConfig& config);

}  // namespace moa::launch
