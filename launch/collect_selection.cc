#include "launch/collect_selection.h"

#include <absl/strings/match.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>

#include "common/status_macros.h"
#include "launch/sweep_jobs.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;
constexpr double kMissing = -1.0;

// A JSON value as the field types of a record; false for a value of another type. Integers must
// be JSON integers within int64's range (nlohmann would convert 1e54 to an integer, which is
// undefined behaviour, and true to 1).
bool ReadValue(const nlohmann::json& value, int64_t* out) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(v);
    return true;
  }
  if (!value.is_number_integer()) return false;
  *out = value.get<int64_t>();
  return true;
}
bool ReadValue(const nlohmann::json& value, double* out) {
  if (!value.is_number()) return false;
  *out = value.get<double>();
  return true;
}
bool ReadValue(const nlohmann::json& value, std::string* out) {
  if (!value.is_string()) return false;
  *out = value.get<std::string>();
  return true;
}
bool ReadValue(const nlohmann::json& value, std::vector<int64_t>* out) {
  if (!value.is_array()) return false;
  out->clear();
  for (const nlohmann::json& element : value) {
    int64_t v;
    if (!ReadValue(element, &v)) return false;
    out->push_back(v);
  }
  return true;
}

// The value of `key` as T, or an error naming the key.
template <typename T>
absl::StatusOr<T> Field(const nlohmann::json& object, const std::string& key,
                        const std::string& where) {
  if (!object.is_object() || !object.contains(key)) {
    return absl::InvalidArgumentError("has no " + where + key);
  }
  T value;
  if (!ReadValue(object.at(key), &value)) {
    return absl::InvalidArgumentError(where + key + " has the wrong type (" +
                                      object.at(key).dump() + ")");
  }
  return value;
}

// The runs of one group keyed by hparams_seed, each in record order.
std::map<int64_t, std::vector<SweepRecord>> ByHparams(const std::vector<SweepRecord>& group) {
  std::map<int64_t, std::vector<SweepRecord>> runs;
  for (const SweepRecord& r : group) runs[r.hparams_seed].push_back(r);
  return runs;
}

bool Known(double accuracy) { return accuracy != kMissing; }

double At(const std::vector<double>& values, int64_t i) {
  return i >= 0 && i < static_cast<int64_t>(values.size()) ? values[i] : kMissing;
}

std::optional<RunAccuracy> TrainingDomainRun(int64_t test_env,
                                             const std::vector<SweepRecord>& run) {
  std::optional<RunAccuracy> best;
  for (const SweepRecord& r : run) {
    if (r.test_envs.size() != 1) continue;
    std::vector<double> validation;
    for (int64_t i = 0; i < static_cast<int64_t>(r.out_acc.size()); ++i) {
      if (i != test_env) validation.push_back(r.out_acc[i]);
    }
    const double test = At(r.in_acc, test_env);
    if (validation.empty() || !Known(test)) continue;
    const RunAccuracy accuracy{MeanAccuracy(validation), test};
    if (!best || accuracy.validation > best->validation) best = accuracy;
  }
  return best;
}

std::optional<RunAccuracy> OracleRun(int64_t test_env, const std::vector<SweepRecord>& run) {
  const SweepRecord* last = nullptr;
  for (const SweepRecord& r : run) {
    if (r.test_envs.size() != 1) continue;
    if (last == nullptr || r.step >= last->step) last = &r;
  }
  if (last == nullptr) return std::nullopt;
  const double validation = At(last->out_acc, test_env), test = At(last->in_acc, test_env);
  if (!Known(validation) || !Known(test)) return std::nullopt;
  return RunAccuracy{validation, test};
}

std::optional<RunAccuracy> LeaveOneOutRun(int64_t test_env, const std::vector<SweepRecord>& run) {
  // Steps in the order they first appear, as DomainBed's group('step').
  std::vector<int64_t> steps;
  std::map<int64_t, std::vector<const SweepRecord*>> at_step;
  for (const SweepRecord& r : run) {
    if (!at_step.count(r.step)) steps.push_back(r.step);
    at_step[r.step].push_back(&r);
  }
  std::optional<RunAccuracy> best;
  for (int64_t step : steps) {
    const std::vector<const SweepRecord*>& records = at_step[step];
    const SweepRecord* test_record = nullptr;
    int singles = 0;
    for (const SweepRecord* r : records) {
      if (r->test_envs.size() == 1) {
        test_record = r;
        ++singles;
      }
    }
    if (singles != 1) continue;
    const int64_t n_envs = static_cast<int64_t>(records.front()->out_acc.size());
    std::vector<double> validation(n_envs, kMissing);
    for (const SweepRecord* r : records) {
      if (r->test_envs.size() != 2) continue;
      const int64_t other = r->test_envs[0] == test_env ? r->test_envs[1] : r->test_envs[0];
      if (other >= 0 && other < n_envs) validation[other] = At(r->in_acc, other);
    }
    double sum = 0;
    bool complete = n_envs > 1;
    for (int64_t e = 0; e < n_envs; ++e) {
      if (e == test_env) continue;
      if (!Known(validation[e])) complete = false;
      sum += validation[e];
    }
    const double test = At(test_record->in_acc, test_env);
    if (!complete || !Known(test)) continue;
    const RunAccuracy accuracy{sum / static_cast<double>(n_envs - 1), test};
    if (!best || accuracy.validation > best->validation) best = accuracy;
  }
  return best;
}

// Reads one results.jsonl; a malformed line or record is an error naming the line.
absl::StatusOr<std::vector<SweepRecord>> ReadResultsFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot open " + path);
  return ParseResultsJsonl(in, path);
}

}  // namespace

absl::StatusOr<std::vector<SweepRecord>> ParseResultsJsonl(std::istream& in,
                                                           const std::string& path) {
  std::vector<SweepRecord> records;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + " line " + std::to_string(number);
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      return absl::DataLossError(where + " is not JSON: " + line.substr(0, 60) +
                                 (line.size() > 60 ? "..." : ""));
    }
    if (json.is_object() && json.contains("swad") && json["swad"] == true) continue;
    auto record = ParseSweepRecord(json);
    if (!record.ok()) {
      return absl::InvalidArgumentError(where + " " + std::string(record.status().message()));
    }
    records.push_back(*std::move(record));
  }
  return records;
}

double MeanAccuracy(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

absl::StatusOr<SweepRecord> ParseSweepRecord(const nlohmann::json& json) {
  SweepRecord r;
  if (!json.is_object()) return absl::InvalidArgumentError("is not a JSON object");
  if (!json.contains("args") || !json["args"].is_object()) {
    return absl::InvalidArgumentError("has no args object");
  }
  const nlohmann::json& args = json["args"];
  MOA_ASSIGN_OR_RETURN(r.dataset, Field<std::string>(args, "dataset", "args."));
  MOA_ASSIGN_OR_RETURN(
      r.method,
      Field<std::string>(args, args.contains("method") ? "method" : "algorithm", "args."));
  MOA_ASSIGN_OR_RETURN(r.test_envs, Field<std::vector<int64_t>>(args, "test_envs", "args."));
  MOA_ASSIGN_OR_RETURN(r.trial_seed, Field<int64_t>(args, "trial_seed", "args."));
  MOA_ASSIGN_OR_RETURN(r.hparams_seed, Field<int64_t>(args, "hparams_seed", "args."));
  MOA_ASSIGN_OR_RETURN(r.step, Field<int64_t>(json, "step", ""));
  for (int64_t i = 0;; ++i) {
    const std::string out_key = "env" + std::to_string(i) + "_out_acc";
    if (!json.contains(out_key)) break;
    MOA_ASSIGN_OR_RETURN(const double out, Field<double>(json, out_key, ""));
    r.out_acc.push_back(out);
    // eval.mode = fast skips the training domains' `in` splits.
    const std::string in_key = "env" + std::to_string(i) + "_in_acc";
    double in = kMissing;
    if (json.contains(in_key)) {
      MOA_ASSIGN_OR_RETURN(in, Field<double>(json, in_key, ""));
    }
    r.in_acc.push_back(in);
  }
  if (r.out_acc.empty()) return absl::InvalidArgumentError("has no env0_out_acc");
  for (int64_t e : r.test_envs) {
    if (e < 0 || e >= static_cast<int64_t>(r.out_acc.size())) {
      return absl::InvalidArgumentError("names test env " + std::to_string(e) + " but has " +
                                        std::to_string(r.out_acc.size()) + " environments");
    }
  }
  return r;
}

absl::StatusOr<std::vector<SweepRecord>> LoadSweepRecords(const std::string& input_dir,
                                                          std::ostream* warnings) {
  std::error_code ec;
  if (!fs::is_directory(input_dir, ec)) {
    return absl::NotFoundError("--input_dir " + input_dir + " is not a directory");
  }
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(input_dir, ec)) entries.push_back(entry.path());
  if (ec) return absl::UnavailableError("cannot read " + input_dir + ": " + ec.message());
  std::sort(entries.begin(), entries.end());
  const std::set<std::string>& ours = SweepDirectoryFiles();
  std::vector<SweepRecord> records;
  for (const fs::path& entry : entries) {
    const std::string name = entry.filename().string();
    if (ours.count(name)) continue;
    if (!fs::is_directory(entry)) {
      *warnings << "note: " << entry.string()
                << (absl::StrContains(name, ".tmp.")
                        ? " is a temporary file left by an interrupted write; ignored\n"
                        : " is not a run directory; ignored\n");
      continue;
    }
    const std::string results = entry.string() + "/results.jsonl";
    if (!fs::exists(results)) {
      const bool run = fs::exists(entry / "job.json") || fs::exists(entry / "config.ini");
      *warnings << "note: " << entry.string()
                << (run ? " has no results.jsonl yet (the run has not reached its first "
                          "evaluation); left out\n"
                        : " holds no results.jsonl and is not a run directory; ignored\n");
      continue;
    }
    auto run_records = ReadResultsFile(results);
    if (!run_records.ok()) {
      *warnings << "warning: " << run_records.status().message() << "; this run is left out\n";
      continue;
    }
    records.insert(records.end(), run_records->begin(), run_records->end());
  }
  return records;
}

std::string SelectionMethodName(SelectionMethod method) {
  switch (method) {
    case SelectionMethod::kTrainingDomain:
      return "training-domain validation set";
    case SelectionMethod::kLeaveOneOut:
      return "leave-one-domain-out cross-validation";
    case SelectionMethod::kOracle:
      break;
  }
  return "test-domain validation set (oracle)";
}

std::optional<RunAccuracy> SelectRun(SelectionMethod method, int64_t test_env,
                                     const std::vector<SweepRecord>& run) {
  switch (method) {
    case SelectionMethod::kTrainingDomain:
      return TrainingDomainRun(test_env, run);
    case SelectionMethod::kLeaveOneOut:
      return LeaveOneOutRun(test_env, run);
    case SelectionMethod::kOracle:
      break;
  }
  return OracleRun(test_env, run);
}

std::optional<double> SelectSweep(SelectionMethod method, int64_t test_env,
                                  const std::vector<SweepRecord>& group) {
  std::optional<RunAccuracy> best;
  for (const auto& [hparams_seed, run] : ByHparams(group)) {
    const std::optional<RunAccuracy> accuracy = SelectRun(method, test_env, run);
    if (accuracy && (!best || accuracy->validation >= best->validation)) best = accuracy;
  }
  if (!best) return std::nullopt;
  return best->test;
}

}  // namespace moa::launch
