#include "launch/collect.h"

#include <absl/strings/str_join.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <tuple>

#include "common/files.h"
#include "data/dataset.h"
#include "launch/cli.h"

namespace moa::launch {
namespace {

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
  return 100.0 * MeanAccuracy(values);
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
    for (const auto& [trial, accuracies] : per_trial) means.push_back(MeanAccuracy(accuracies));
    return means;
  };
  s += FormatTable(MethodTable("Averages, model selection method: " + name, methods, datasets,
                               format, trial_means),
                   25, format);
  return s;
}

}  // namespace

std::string FormatMeanAndError(const std::vector<double>& values, TableFormat format) {
  if (values.empty()) return "X";
  const double mean = MeanAccuracy(values);
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
  CommandLine cli("collect",
                  "usage: moa collect --input_dir DIR [--format text|markdown|latex]\n\n"
                  "Reads DIR/*/results.jsonl, applies training-domain validation, "
                  "leave-one-domain-out\nand oracle selection as DomainBed does, prints the tables "
                  "in the chosen format and\nwrites all three to DIR/results.txt, results.md and "
                  "results.tex.\n");
  cli.AddString("input_dir", "DIR", "the sweep directory (moa sweep's --output.dir; required)",
                &input_dir);
  cli.AddString("format", "F", "text, markdown or latex (default text)", &format_name);
  if (std::optional<int> exit_code = cli.ParseOrExitCode(args)) return *exit_code;
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
