// `moa collect`: reads every run's results.jsonl under a sweep directory and applies DomainBed's
// three model-selection methods across the sweep (docs/architecture.md, Sweeps and collect), then
// prints DomainBed's tables: per dataset, one row per method with the test accuracy of each test
// domain and their average as 100 x mean +/- standard error over trials, and an "Averages" table
// across datasets; as plain text (DomainBed's fixed-width layout), Markdown or LaTeX.
//
//   auto records = LoadSweepRecords("sweeps/tiny", &std::cerr);
//   std::cout << FormatResults(*records, TableFormat::kText);
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

namespace moa::launch {

/// The fields of one results.jsonl record that selection reads.
struct SweepRecord {
  std::string dataset;
  std::string method;
  std::vector<int64_t> test_envs;
  int64_t trial_seed = 0;
  int64_t hparams_seed = 0;
  int64_t step = 0;
  std::vector<double> in_acc;   // env{i}_in_acc, i = 0 .. environments - 1
  std::vector<double> out_acc;  // env{i}_out_acc
};

/// Reads one record; errors name the missing or mistyped key.
absl::StatusOr<SweepRecord> ParseSweepRecord(const nlohmann::json& record);

/// Every record of every results.jsonl one level under `input_dir`. A run whose file has a
/// malformed line or record is left out whole, with a warning naming the file and line on
/// `warnings`; so are SWAD records (not checkpoints of the run). Directories without
/// results.jsonl and foreign files are reported and left alone; nothing is deleted or changed.
/// Fails only when `input_dir` cannot be read.
absl::StatusOr<std::vector<SweepRecord>> LoadSweepRecords(const std::string& input_dir,
                                                          std::ostream* warnings);

enum class SelectionMethod { kTrainingDomain, kLeaveOneOut, kOracle };

/// DomainBed's names: "training-domain validation set", "leave-one-domain-out
/// cross-validation", "test-domain validation set (oracle)".
std::string SelectionMethodName(SelectionMethod method);

struct RunAccuracy {
  double validation = 0;
  double test = 0;
};

/// One run (the records of one hyper-parameter draw in one (trial, dataset, method, test env)
/// group) under a selection method; nullopt when the method has nothing to go on.
/// Training-domain validation: the record with the highest mean training-domain `out` accuracy
/// (earliest on ties), single-test-env records only. Oracle: the last step's test-domain `out`
/// accuracy. Leave-one-domain-out: per step, the mean over the other environments e of the
/// `in` accuracy on e of the run whose test envs are {test env, e}; a step missing any of them
/// has no value; the best step (earliest on ties).
std::optional<RunAccuracy> SelectRun(SelectionMethod method, int64_t test_env,
                                     const std::vector<SweepRecord>& run);

/// The test accuracy of the sweep for one group: the run with the highest validation score
/// (on ties, the higher hparams_seed: DomainBed's stable sort in hparams order, reversed).
std::optional<double> SelectSweep(SelectionMethod method, int64_t test_env,
                                  const std::vector<SweepRecord>& group);

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
