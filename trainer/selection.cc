#include "trainer/selection.h"

#include <cstdio>

#include "common/status_macros.h"

namespace moa::trainer {
namespace {

absl::StatusOr<double> Key(const nlohmann::json& record, const std::string& key) {
  if (!record.contains(key) || !record[key].is_number()) {
    const std::string step = record.contains("step") ? record["step"].dump() : "?";
    return absl::InvalidArgumentError("results record at step " + step + " lacks numeric key " +
                                      key);
  }
  return record[key].get<double>();
}

absl::StatusOr<double> MeanOf(const nlohmann::json& record, const std::vector<int64_t>& envs,
                              const std::string& suffix) {
  double sum = 0;
  for (int64_t e : envs) {
    auto v = Key(record, "env" + std::to_string(e) + suffix);
    if (!v.ok()) return v.status();
    sum += *v;
  }
  return envs.empty() ? 0.0 : sum / static_cast<double>(envs.size());
}

}  // namespace

absl::StatusOr<double> TrainingDomainValidation(const nlohmann::json& record,
                                                const std::vector<int64_t>& train_envs) {
  return MeanOf(record, train_envs, "_out_acc");
}

absl::StatusOr<std::vector<Selection>> SelectModels(const std::vector<nlohmann::json>& records,
                                                    const std::vector<int64_t>& train_envs,
                                                    const std::vector<int64_t>& test_envs) {
  if (records.empty()) return absl::InvalidArgumentError("no results records to select from");
  if (test_envs.empty()) return absl::InvalidArgumentError("model selection needs a test env");
  struct Method {
    const char* name;
    const std::vector<int64_t>* envs;  // whose out accuracy is the validation score
    bool last_only;
  };
  const Method methods[] = {{"training-domain validation", &train_envs, false},
                            {"test-domain oracle", &test_envs, false},
                            {"last", &test_envs, true}};
  std::vector<Selection> out;
  for (const Method& m : methods) {
    Selection s;
    s.method = m.name;
    const size_t first = m.last_only ? records.size() - 1 : 0;
    for (size_t i = first; i < records.size(); ++i) {
      auto val = MeanOf(records[i], *m.envs, "_out_acc");
      if (!val.ok()) return val.status();
      if (s.record < 0 || *val > s.validation) {  // strict: ties keep the earliest
        s.record = static_cast<int64_t>(i);
        s.validation = *val;
      }
    }
    const nlohmann::json& chosen = records[s.record];
    s.step = chosen.value("step", int64_t{-1});
    double sum = 0;
    for (int64_t t : test_envs) {
      auto v = Key(chosen, "env" + std::to_string(t) + "_in_acc");
      if (!v.ok()) return v.status();
      s.test_in.push_back(*v);
      sum += *v;
    }
    s.average = sum / static_cast<double>(test_envs.size());
    out.push_back(std::move(s));
  }
  return out;
}

std::string FormatSelectionTable(const std::vector<Selection>& selections,
                                 const std::vector<std::string>& test_env_names) {
  char cell[64];
  std::string text;
  std::snprintf(cell, sizeof(cell), "%-28s", "selection");
  text += cell;
  for (const std::string& name : test_env_names) {
    std::snprintf(cell, sizeof(cell), " %10s", name.c_str());
    text += cell;
  }
  text += "       Avg.   step\n";
  for (const Selection& s : selections) {
    std::snprintf(cell, sizeof(cell), "%-28s", s.method.c_str());
    text += cell;
    for (double v : s.test_in) {
      std::snprintf(cell, sizeof(cell), " %10.3f", 100.0 * v);
      text += cell;
    }
    std::snprintf(cell, sizeof(cell), " %10.3f %6lld\n", 100.0 * s.average,
                  static_cast<long long>(s.step));
    text += cell;
  }
  return text;
}

absl::StatusOr<std::vector<Selection>> SelectRunModels(const std::vector<nlohmann::json>& records,
                                                       const nlohmann::json& swad_record,
                                                       const std::vector<int64_t>& train_envs,
                                                       const std::vector<int64_t>& test_envs) {
  MOA_ASSIGN_OR_RETURN(std::vector<Selection> selections,
                       SelectModels(records, train_envs, test_envs));
  if (!swad_record.is_object()) return selections;
  MOA_ASSIGN_OR_RETURN(double validation, TrainingDomainValidation(swad_record, train_envs));
  Selection swad, in_domain;
  swad.method = "SWAD";
  in_domain.method = "SWAD (inD)";
  swad.step = in_domain.step = swad_record["step"].get<int64_t>();
  for (int64_t t : test_envs) {
    swad.test_in.push_back(swad_record["env" + std::to_string(t) + "_in_acc"].get<double>());
    swad.average += swad.test_in.back() / static_cast<double>(test_envs.size());
    in_domain.test_in.push_back(validation);
  }
  in_domain.average = validation;
  selections.push_back(swad);
  selections.push_back(in_domain);
  return selections;
}

}  // namespace moa::trainer
