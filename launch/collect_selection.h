// DomainBed's three model-selection methods over a sweep's records (docs/architecture.md, Sweeps
// and collect): reading every run's results.jsonl under a sweep directory, then choosing, per
// group of runs, the hyper-parameter draw and step that training-domain validation,
// leave-one-domain-out cross-validation or the test-domain oracle would choose.
#pragma once

#include <cstdint>
#include <istream>
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

/// The records of one results.jsonl's text, SWAD records skipped; a malformed line or record is
/// an error naming `path` and the line.
absl::StatusOr<std::vector<SweepRecord>> ParseResultsJsonl(std::istream& text,
                                                           const std::string& path);

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

/// The mean of accuracies (NaN for none).
double MeanAccuracy(const std::vector<double>& values);

}  // namespace moa::launch
