// `moa report RUN_OR_SWEEP_DIR [...] --output report.html`: gathers each run's results.jsonl,
// config.ini and model selection (and a sweep folder's `moa collect` tables) and writes the
// self-contained HTML page of report/html_report.h.
#pragma once

#include <string>
#include <vector>

namespace moa::launch {

/// `moa report ...` (the words after `report`); returns the exit code.
int RunReportCommand(const std::vector<std::string>& args);

}  // namespace moa::launch
