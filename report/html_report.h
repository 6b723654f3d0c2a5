// `moa report`'s page: one self-contained HTML file (inline SVG and CSS, a few lines of script,
// nothing fetched) with, per run, the accuracy curves of every (domain, split) with the selected
// step marked, the loss curves, each MoA layer's expert usage over training as a heat map and the
// selection table; the configuration keys that differ between the runs; and a sweep's results
// tables. The DOM names what it draws (class and data-* attributes) so tests can check it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moa::report {

struct RunReport {
  std::string name;                           // the run folder, as given
  std::vector<nlohmann::json> records;        // results.jsonl, in order (SWAD's record left out)
  std::map<std::string, std::string> config;  // section.key -> value, from config.ini
  int64_t selected_step = -1;                 // training-domain validation's choice (-1: none)
  std::string selection_table;                // the run's selection table, as text
};

struct ReportInput {
  std::string title;
  std::vector<RunReport> runs;
  /// Sweep folders given: (folder, `moa collect`'s tables as text).
  std::vector<std::pair<std::string, std::string>> sweeps;
};

/// The whole page.
std::string RenderHtmlReport(const ReportInput& input);

/// The (domain, split) accuracy series of a record: its keys envE_in_acc / envE_out_acc, sorted
/// by environment then split.
std::vector<std::string> AccuracySeries(const nlohmann::json& record);

}  // namespace moa::report
