// `moa collect`: DomainBed's tables of a sweep's selected accuracies (the selection itself is
// collect_selection.h): per dataset, one row per method with the test accuracy of each test
// domain and their average as 100 x mean +/- standard error over trials, and an "Averages" table
// across datasets; as plain text (DomainBed's fixed-width layout), Markdown or LaTeX.
//
//   auto records = LoadSweepRecords("sweeps/tiny", &std::cerr);
//   std::cout << FormatResults(*records, TableFormat::kText);
#pragma once

#include <string>
#include <vector>

#include "launch/collect_selection.h"

namespace moa::launch {

/// DomainBed's cell: "93.3 +/- 1.2" (LaTeX "$\pm$", Markdown "±") of 100 x the mean and the
/// standard error (population std / sqrt(n)); "X" for no values.
enum class TableFormat { kText, kMarkdown, kLatex };
std::string FormatMeanAndError(const std::vector<double>& values, TableFormat format);

/// The whole report in one format: the record count, then for each selection method a table per
/// dataset (rows: methods; columns: the dataset's environments and Avg) and an Averages table.
std::string FormatResults(const std::vector<SweepRecord>& records, TableFormat format);

/// `moa collect ...`; returns the exit code.
int RunCollectCommand(const std::vector<std::string>& args);

}  // namespace moa::launch
