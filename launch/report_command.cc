// A run folder holds results.jsonl; a sweep folder holds run folders that do.
#include "launch/report_command.h"

#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>

#include "common/files.h"
#include "common/status_macros.h"
#include "launch/cli.h"
#include "launch/collect.h"
#include "report/html_report.h"
#include "trainer/run_files.h"
#include "trainer/selection.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;
namespace po = boost::program_options;

// config.ini as section.key -> value (Boost's INI reader, every key accepted).
absl::StatusOr<std::map<std::string, std::string>> ReadConfig(const std::string& path) {
  std::map<std::string, std::string> config;
  if (!fs::exists(path)) return config;
  std::ifstream in(path);
  try {
    const po::parsed_options parsed =
        po::parse_config_file(in, po::options_description(), /*allow_unregistered=*/true);
    for (const po::option& option : parsed.options) {
      config[option.string_key] = option.value.empty() ? "" : option.value.front();
    }
  } catch (const po::error& e) {
    return absl::InvalidArgumentError(path + ": " + e.what());
  }
  return config;
}

absl::StatusOr<report::RunReport> ReadRun(const std::string& dir) {
  report::RunReport run;
  run.name = dir;
  MOA_ASSIGN_OR_RETURN(
      trainer::RecordsUpTo read,
      trainer::ReadRecordsUpTo(dir + "/results.jsonl", std::numeric_limits<int64_t>::max()));
  run.records = std::move(read.records);
  MOA_ASSIGN_OR_RETURN(run.config, ReadConfig(dir + "/config.ini"));
  if (auto table = ReadFile(dir + "/selection.txt"); table.ok()) run.selection_table = *table;
  if (run.records.empty()) return run;
  const nlohmann::json& first = run.records.front();
  std::vector<int64_t> train_envs, test_envs;
  if (first.contains("args")) test_envs = first["args"].value("test_envs", std::vector<int64_t>{});
  // Environments from any accuracy key: runs may evaluate only the training domains' out splits.
  for (const std::string& key : report::AccuracySeries(first)) {
    const int64_t env = std::stoll(key.substr(3));
    if (std::find(test_envs.begin(), test_envs.end(), env) == test_envs.end() &&
        std::find(train_envs.begin(), train_envs.end(), env) == train_envs.end()) {
      train_envs.push_back(env);
    }
  }
  if (!test_envs.empty() && !train_envs.empty()) {
    MOA_ASSIGN_OR_RETURN(const std::vector<trainer::Selection> selections,
                         trainer::SelectModels(run.records, train_envs, test_envs));
    run.selected_step = selections.front().step;  // training-domain validation
  }
  return run;
}

}  // namespace

int RunReportCommand(const std::vector<std::string>& args) {
  std::vector<std::string> folders;
  std::string output = "report.html";
  CommandLine cli("report",
                  "usage: moa report RUN_OR_SWEEP_DIR [RUN_OR_SWEEP_DIR ...] "
                  "[--output report.html]\n\n"
                  "Writes one self-contained HTML page: accuracy and loss curves with the selected "
                  "step, router usage heat maps, selection tables, the configuration keys that "
                  "differ between the runs, and a sweep folder's results tables.\n");
  cli.AddString("output", "FILE", "the HTML page (default report.html)", &output);
  cli.AddPositional(&folders);
  if (std::optional<int> exit_code = cli.ParseOrExitCode(args)) return *exit_code;
  if (folders.empty()) {
    std::cerr << "moa report: name at least one run or sweep folder\n";
    return 2;
  }
  report::ReportInput input;
  input.title = "moa report: " + folders.front() + (folders.size() > 1 ? " and others" : "");
  for (const std::string& folder : folders) {
    if (fs::exists(folder + "/results.jsonl")) {
      auto run = ReadRun(folder);
      if (!run.ok()) {
        std::cerr << "moa report: " << run.status().message() << "\n";
        return 1;
      }
      input.runs.push_back(std::move(*run));
      continue;
    }
    // A run left out (a malformed results.jsonl) is named on stderr, as moa collect does.
    auto records = fs::is_directory(folder) ? LoadSweepRecords(folder, &std::cerr)
                                            : absl::StatusOr<std::vector<SweepRecord>>(
                                                  absl::NotFoundError(folder + ": no such folder"));
    if (!records.ok() || records->empty()) {
      std::cerr << "moa report: " << folder
                << (records.ok() ? " holds no results.jsonl, nor run folders that do"
                                 : ": " + std::string(records.status().message()))
                << "\n";
      return 1;
    }
    input.sweeps.emplace_back(folder, FormatResults(*records, TableFormat::kText));
  }
  const absl::Status written = WriteFileAtomically(output, report::RenderHtmlReport(input));
  if (!written.ok()) {
    std::cerr << "moa report: " << written.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << output << " (" << input.runs.size() << " runs, " << input.sweeps.size()
            << " sweeps)\n";
  return 0;
}

}  // namespace moa::launch
