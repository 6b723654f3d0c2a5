// The `moa` subcommands (train, pretrain, info, eval, export, data check, sweep, collect): argument
// handling and what each prints. main.cc only dispatches; tests call RunCommand directly.
#pragma once

#include <string>
#include <vector>

namespace moa::launch {

/// Runs `moa <args...>` (args excludes the program name) and returns the exit code; output goes
/// to stdout, errors to stderr.
int RunCommand(const std::vector<std::string>& args);

}  // namespace moa::launch
