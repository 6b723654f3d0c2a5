#include "launch/collect.h"

#include <absl/strings/match.h>
#include <absl/strings/str_join.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <tuple>

#include "common/files.h"
#include "common/status_macros.h"
#include "data/dataset.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;
constexpr double kMissing = -1.0;

// The value of `key` as T, or an error naming the key.
template <typename T>
absl::StatusOr<T> Field(const nlohmann::json& object, const std::string& key,
                        const std::string& where) {
  if (!object.is_object() || !object.contains(key)) {
    return absl::InvalidArgumentError("has no " + where + key);
  }
  try {
    return object.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError(where + key + " has the wrong type (" +
                                      object.at(key).dump() + ")");
  }
}

double Mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
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
    const RunAccuracy accuracy{Mean(validation), test};
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

// ---- Tables ----

struct Table {
  std::string header;  // text mode's "-------- <header>" line
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;  // first cell: the row label
};

std::string EscapeLatex(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '%' || c == '_' || c == '&' || c == '#' || c == '$') out += '\\';
    out += c;
  }
  return out;
}

// DomainBed's misc.print_row: every cell padded to the width (text: also cut to it), joined by
// two spaces or " & ", and print()'s separating space before the line end.
std::string FormatRow(const std::vector<std::string>& cells, size_t width, bool latex) {
  std::vector<std::string> padded;
  for (const std::string& cell : cells) {
    std::string p = cell;
    if (p.size() < width) p.append(width - p.size(), ' ');
    if (!latex && p.size() > width) p.resize(width);
    padded.push_back(p);
  }
  return absl::StrJoin(padded, latex ? " & " : "  ") + (latex ? " \\\\\n" : " \n");
}

std::string FormatTable(const Table& table, size_t width, TableFormat format) {
  std::string s = "\n";
  if (format == TableFormat::kMarkdown) {
    s += "| " + absl::StrJoin(table.columns, " | ") + " |\n|";
    for (size_t c = 0; c < table.columns.size(); ++c) s += c == 0 ? "---|" : "---:|";
    s += "\n";
    for (const auto& row : table.rows) s += "| " + absl::StrJoin(row, " | ") + " |\n";
    return s;
  }
  const bool latex = format == TableFormat::kLatex;
  std::vector<std::string> columns = table.columns;
  if (latex) {
    s += "\\begin{center}\n\\adjustbox{max width=\\textwidth}{%\n\\begin{tabular}{l" +
         std::string(columns.size() - 1, 'c') + "}\n\\toprule\n";
    for (std::string& c : columns) c = "\\textbf{" + EscapeLatex(c) + "}";
  } else {
    s += "-------- " + table.header + "\n";
  }
  s += FormatRow(columns, width, latex);
  if (latex) s += "\\midrule\n";
  for (const auto& row : table.rows) {
    std::vector<std::string> cells = row;
    if (latex) cells[0] = EscapeLatex(cells[0]);
    s += FormatRow(cells, width, latex);
  }
  if (latex) s += "\\bottomrule\n\\end{tabular}}\n\\end{center}\n";
  return s;
}

// One group's selected test accuracy.
struct Selected {
  int64_t trial_seed;
  std::string dataset;
  std::string method;
  int64_t test_env;
  double accuracy;
};

std::vector<Selected> SelectAll(const std::vector<SweepRecord>& records, SelectionMethod method) {
  std::map<std::tuple<int64_t, std::string, std::string, int64_t>, std::vector<SweepRecord>> groups;
  for (const SweepRecord& r : records) {
    for (int64_t env : r.test_envs) groups[{r.trial_seed, r.dataset, r.method, env}].push_back(r);
  }
  std::vector<Selected> selected;
  for (const auto& [key, group] : groups) {
    const std::optional<double> accuracy = SelectSweep(method, std::get<3>(key), group);
    if (accuracy) {
      selected.push_back(
          {std::get<0>(key), std::get<1>(key), std::get<2>(key), std::get<3>(key), *accuracy});
    }
  }
  return selected;
}

// Methods in the adapter registry's order, then any other in alphabetical order.
std::vector<std::string> MethodOrder(const std::vector<SweepRecord>& records) {
  std::set<std::string> present;
  for (const SweepRecord& r : records) present.insert(r.method);
  std::vector<std::string> order;
  for (const char* m : {"full", "attention", "lora", "kadaptation", "moa"}) {
    if (present.erase(m)) order.push_back(m);
  }
  order.insert(order.end(), present.begin(), present.end());
  return order;
}

// Datasets in the registry's order (DomainBed's), then any other in alphabetical order.
std::vector<std::string> DatasetOrder(const std::vector<SweepRecord>& records) {
  std::set<std::string> present;
  for (const SweepRecord& r : records) present.insert(r.dataset);
  std::vector<std::string> order;
  for (const std::string& d : data::KnownDatasets()) {
    if (present.erase(d)) order.push_back(d);
  }
  order.insert(order.end(), present.begin(), present.end());
  return order;
}

std::vector<std::string> EnvironmentNames(const std::string& dataset,
                                          const std::vector<SweepRecord>& records) {
  auto info = data::LookupDataset(dataset);
  if (info.ok()) return info->environments;
  size_t n = 0;
  for (const SweepRecord& r : records) {
    if (r.dataset == dataset) n = std::max(n, r.out_acc.size());
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) names.push_back("env" + std::to_string(i));
  return names;
}

// The mean of 100 x values, or nullopt.
std::optional<double> PercentMean(const std::vector<double>& values) {
  if (values.empty()) return std::nullopt;
  return 100.0 * Mean(values);
}

std::string AverageCell(const std::vector<std::optional<double>>& means) {
  double sum = 0;
  for (const auto& m : means) {
    if (!m) return "X";
    sum += *m;
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", sum / static_cast<double>(means.size()));
  return text;
}

// A table with one row per method and a column per label plus Avg; values(method, column) are a
// cell's values (one per trial).
Table MethodTable(const std::string& header, const std::vector<std::string>& methods,
                  const std::vector<std::string>& labels, TableFormat format,
                  const std::function<std::vector<double>(const std::string&, size_t)>& values) {
  Table table;
  table.header = header;
  table.columns = {"Method"};
  table.columns.insert(table.columns.end(), labels.begin(), labels.end());
  table.columns.push_back("Avg");
  for (const std::string& m : methods) {
    std::vector<std::string> row = {m};
    std::vector<std::optional<double>> means;
    for (size_t column = 0; column < labels.size(); ++column) {
      const std::vector<double> cell = values(m, column);
      row.push_back(FormatMeanAndError(cell, format));
      means.push_back(PercentMean(cell));
    }
    row.push_back(AverageCell(means));
    table.rows.push_back(row);
  }
  return table;
}

std::string FormatSelectionTables(const std::vector<SweepRecord>& records, SelectionMethod method,
                                  TableFormat format) {
  const std::vector<Selected> selected = SelectAll(records, method);
  const std::vector<std::string> methods = MethodOrder(records);
  const std::vector<std::string> datasets = DatasetOrder(records);
  const std::string name = SelectionMethodName(method);
  std::string s;
  for (const std::string& dataset : datasets) {
    if (format == TableFormat::kLatex) s += "\n\\subsubsection{" + EscapeLatex(dataset) + "}\n";
    if (format == TableFormat::kMarkdown) s += "\n### Dataset: " + dataset + "\n";
    // A cell: the selected accuracy of each trial for (dataset, method, test env).
    auto trials = [&](const std::string& m, size_t env) {
      std::vector<double> accuracies;
      for (const Selected& g : selected) {
        if (g.dataset == dataset && g.method == m && g.test_env == static_cast<int64_t>(env)) {
          accuracies.push_back(g.accuracy);
        }
      }
      return accuracies;
    };
    s += FormatTable(MethodTable("Dataset: " + dataset + ", model selection method: " + name,
                                 methods, EnvironmentNames(dataset, records), format, trials),
                     20, format);
  }
  if (format == TableFormat::kLatex) s += "\n\\subsubsection{Averages}\n";
  if (format == TableFormat::kMarkdown) s += "\n### Averages\n";
  // A cell: per trial, the mean over the test environments it has a value for.
  auto trial_means = [&](const std::string& m, size_t column) {
    std::map<int64_t, std::vector<double>> per_trial;
    for (const Selected& g : selected) {
      if (g.dataset == datasets[column] && g.method == m) {
        per_trial[g.trial_seed].push_back(g.accuracy);
      }
    }
    std::vector<double> means;
    for (const auto& [trial, accuracies] : per_trial) means.push_back(Mean(accuracies));
    return means;
  };
  s += FormatTable(MethodTable("Averages, model selection method: " + name, methods, datasets,
                               format, trial_means),
                   25, format);
  return s;
}

// Reads one results.jsonl; a malformed line or record is an error naming the line.
absl::StatusOr<std::vector<SweepRecord>> ReadResultsFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot open " + path);
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

}  // namespace

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
  static const std::set<std::string> ours = {"slurm", "results.txt", "results.md", "results.tex"};
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

std::string FormatMeanAndError(const std::vector<double>& values, TableFormat format) {
  if (values.empty()) return "X";
  const double mean = Mean(values);
  double variance = 0;
  for (double v : values) variance += (v - mean) * (v - mean);
  variance /= static_cast<double>(values.size());
  const double error = 100.0 * std::sqrt(variance) / std::sqrt(static_cast<double>(values.size()));
  const char* plus_minus = format == TableFormat::kLatex      ? "$\\pm$"
                           : format == TableFormat::kMarkdown ? "±"
                                                              : "+/-";
  char text[64];
  std::snprintf(text, sizeof(text), "%.1f %s %.1f", 100.0 * mean, plus_minus, error);
  return text;
}

std::string FormatResults(const std::vector<SweepRecord>& records, TableFormat format) {
  const std::string count = std::to_string(records.size());
  std::string s;
  if (format == TableFormat::kLatex) {
    s += "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{adjustbox}\n"
         "\\begin{document}\n\\section{Full DomainBed results}\n% Total records: " +
         count + "\n";
  } else {
    s += "Total records: " + count + "\n";
  }
  for (SelectionMethod method : {SelectionMethod::kTrainingDomain, SelectionMethod::kLeaveOneOut,
                                 SelectionMethod::kOracle}) {
    if (format == TableFormat::kLatex) {
      s += "\n\\subsection{Model selection: " + SelectionMethodName(method) + "}\n";
    }
    if (format == TableFormat::kMarkdown) {
      s += "\n## Model selection: " + SelectionMethodName(method) + "\n";
    }
    s += FormatSelectionTables(records, method, format);
  }
  if (format == TableFormat::kLatex) s += "\\end{document}\n";
  return s;
}

int RunCollectCommand(const std::vector<std::string>& args) {
  std::string input_dir, format_name = "text";
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "usage: moa collect --input_dir DIR [--format text|markdown|latex]\n\n"
          "Reads DIR/*/results.jsonl, applies training-domain validation, leave-one-domain-out\n"
          "and oracle selection as DomainBed does, prints the tables in the chosen format and\n"
          "writes all three to DIR/results.txt, results.md and results.tex.\n");
      return 0;
    }
    const bool inline_value = a.find('=') != std::string::npos;
    const std::string flag = inline_value ? a.substr(0, a.find('=')) : a;
    if (flag != "--input_dir" && flag != "--format") {
      std::cerr << "moa collect: unexpected argument '" << a << "' (see moa collect --help)\n";
      return 2;
    }
    if (!inline_value && i + 1 >= args.size()) {
      std::cerr << "moa collect: " << flag << " needs a value\n";
      return 2;
    }
    const std::string value = inline_value ? a.substr(a.find('=') + 1) : args[++i];
    (flag == "--input_dir" ? input_dir : format_name) = value;
  }
  if (input_dir.empty()) {
    std::cerr << "moa collect: --input_dir is required\n";
    return 2;
  }
  const std::map<std::string, TableFormat> formats = {{"text", TableFormat::kText},
                                                      {"markdown", TableFormat::kMarkdown},
                                                      {"latex", TableFormat::kLatex}};
  if (!formats.count(format_name)) {
    std::cerr << "moa collect: --format must be text, markdown or latex, got '" << format_name
              << "'\n";
    return 2;
  }
  auto records = LoadSweepRecords(input_dir, &std::cerr);
  if (!records.ok()) {
    std::cerr << "moa collect: " << records.status().message() << "\n";
    return 1;
  }
  if (records->empty()) {
    std::cerr << "moa collect: no results.jsonl record under " << input_dir << "\n";
    return 1;
  }
  std::printf("%s", FormatResults(*records, formats.at(format_name)).c_str());
  const std::pair<const char*, TableFormat> files[] = {{"results.txt", TableFormat::kText},
                                                       {"results.md", TableFormat::kMarkdown},
                                                       {"results.tex", TableFormat::kLatex}};
  for (const auto& [file, format] : files) {
    const absl::Status written =
        WriteFileAtomically(input_dir + "/" + file, FormatResults(*records, format));
    if (!written.ok()) std::cerr << "moa collect: warning: " << written.message() << "\n";
  }
  return 0;
}

}  // namespace moa::launch
