// Model selection within one run (docs/architecture.md, One training step, step 9; and
// docs/method.md, Training protocol) over the records of results.jsonl: training-domain validation
// (highest mean of the training domains' `out` accuracies, earliest on ties), test-domain oracle
// (highest test-domain `out` accuracy, earliest on ties) and last; each reports the test domains'
// `in` accuracy at the chosen record.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

namespace moa::trainer {

struct Selection {
  std::string method;   // "training-domain validation", "test-domain oracle", "last"
  int64_t record = -1;  // index into the records
  int64_t step = -1;
  double validation = 0;        // the score the method maximised
  std::vector<double> test_in;  // per test env, in test_envs order
  double average = 0;           // mean of test_in
};

/// The validation score of training-domain validation for one record.
absl::StatusOr<double> TrainingDomainValidation(const nlohmann::json& record,
                                                const std::vector<int64_t>& train_envs);

/// Applies the three methods; records must be non-empty and carry the keys they read (a missing
/// key is an error naming it and the record's step).
absl::StatusOr<std::vector<Selection>> SelectModels(const std::vector<nlohmann::json>& records,
                                                    const std::vector<int64_t>& train_envs,
                                                    const std::vector<int64_t>& test_envs);

/// What a run reports: SelectModels, plus with `swad_record` (null without SWAD) "SWAD", the
/// averaged weights' test-domain `in` accuracy, and "SWAD (inD)", their training-domain
/// validation accuracy (as the reference reports it).
absl::StatusOr<std::vector<Selection>> SelectRunModels(const std::vector<nlohmann::json>& records,
                                                       const nlohmann::json& swad_record,
                                                       const std::vector<int64_t>& train_envs,
                                                       const std::vector<int64_t>& test_envs);

/// The table of selections: one row per method, a column per test domain and "Avg.", percentages
/// with 3 decimals, and the chosen step.
std::string FormatSelectionTable(const std::vector<Selection>& selections,
                                 const std::vector<std::string>& test_env_names);

}  // namespace moa::trainer
