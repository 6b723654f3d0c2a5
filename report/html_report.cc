// The report page: SVG line charts and heat maps drawn here, tables, and a legend script that
// shows or hides a curve when its legend entry is clicked.
#include "report/html_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

namespace moa::report {
namespace {

constexpr int kWidth = 760, kHeight = 300;
constexpr int kLeft = 56, kRight = 170, kTop = 28, kBottom = 40;

const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Num(double value, const char* format = "%.4g") {
  char text[32];
  std::snprintf(text, sizeof(text), format, value);
  return text;
}

struct Series {
  std::string name;                               // data-series
  std::vector<std::pair<double, double>> points;  // (step, value)
  bool dashed = false;
  std::string label;  // the legend's text (the name when empty)
};

// A line chart of `series` over steps; `marked_step` >= 0 draws the selected step.
std::string LineChart(const std::string& kind, const std::string& title,
                      const std::vector<Series>& series, int64_t marked_step) {
  double x_min = 1e300, x_max = -1e300, y_min = 1e300, y_max = -1e300;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) {
      x_min = std::min(x_min, x), x_max = std::max(x_max, x);
      y_min = std::min(y_min, y), y_max = std::max(y_max, y);
    }
  }
  if (x_min > x_max) return "<p>no data for " + Escape(title) + "</p>\n";
  if (x_max == x_min) x_max = x_min + 1;
  if (y_max - y_min < 1e-9) y_min -= 0.5, y_max += 0.5;
  const double pad = 0.05 * (y_max - y_min);
  y_min -= pad, y_max += pad;
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  const auto px = [&](double x) { return kLeft + (x - x_min) / (x_max - x_min) * plot_w; };
  const auto py = [&](double y) { return kTop + (1 - (y - y_min) / (y_max - y_min)) * plot_h; };
  std::string svg = "<svg class=\"chart\" data-kind=\"" + kind + "\" width=\"" +
                    std::to_string(kWidth) + "\" height=\"" + std::to_string(kHeight) +
                    "\" viewBox=\"0 0 " + std::to_string(kWidth) + " " + std::to_string(kHeight) +
                    "\" xmlns=\"http://www.w3.org/2000/svg\">\n";
  svg += "<text x=\"" + std::to_string(kLeft) + "\" y=\"18\" class=\"chart-title\">" +
         Escape(title) + "</text>\n";
  svg += "<rect x=\"" + Num(kLeft) + "\" y=\"" + Num(kTop) + "\" width=\"" + Num(plot_w) +
         "\" height=\"" + Num(plot_h) + "\" class=\"plot-area\"/>\n";
  for (int t = 0; t <= 4; ++t) {
    const double y = y_min + (y_max - y_min) * t / 4, x = x_min + (x_max - x_min) * t / 4;
    svg += "<line class=\"grid\" x1=\"" + Num(kLeft) + "\" x2=\"" + Num(kLeft + plot_w) +
           "\" y1=\"" + Num(py(y)) + "\" y2=\"" + Num(py(y)) + "\"/>";
    svg += "<text class=\"tick\" x=\"" + Num(kLeft - 6) + "\" y=\"" + Num(py(y) + 4) +
           "\" text-anchor=\"end\">" + Num(y, "%.3g") + "</text>";
    svg += "<text class=\"tick\" x=\"" + Num(px(x)) + "\" y=\"" + Num(kTop + plot_h + 16) +
           "\" text-anchor=\"middle\">" + Num(std::round(x), "%.0f") + "</text>\n";
  }
  svg += "<text class=\"axis-label\" x=\"" + Num(kLeft + plot_w / 2) + "\" y=\"" +
         Num(kHeight - 6) + "\" text-anchor=\"middle\">step</text>\n";
  if (marked_step >= 0) {
    const double x = px(static_cast<double>(marked_step));
    svg += "<line class=\"selected-step\" data-step=\"" + std::to_string(marked_step) + "\" x1=\"" +
           Num(x) + "\" x2=\"" + Num(x) + "\" y1=\"" + Num(kTop) + "\" y2=\"" + Num(kTop + plot_h) +
           "\"><title>selected: step " + std::to_string(marked_step) +
           " (training-domain validation)</title></line>\n";
  }
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const std::string color = kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))];
    const std::string name = Escape(s.name);
    std::string points;
    for (const auto& [x, y] : s.points) points += Num(px(x)) + "," + Num(py(y)) + " ";
    svg += "<polyline class=\"curve\" data-series=\"" + name + "\" points=\"" + points +
           "\" stroke=\"" + color + "\"" + (s.dashed ? " stroke-dasharray=\"5,3\"" : "") + "/>\n";
    for (const auto& [x, y] : s.points) {
      svg += "<circle class=\"point\" data-series=\"" + name + "\" data-step=\"" + Num(x, "%.0f") +
             "\" data-value=\"" + Num(y, "%.6g") + "\" cx=\"" + Num(px(x)) + "\" cy=\"" +
             Num(py(y)) + "\" r=\"2.5\" fill=\"" + color + "\"><title>" + name + " step " +
             Num(x, "%.0f") + ": " + Num(y, "%.4g") + "</title></circle>\n";
    }
    const double ly = kTop + 6 + 15.0 * static_cast<double>(i);
    svg += "<g class=\"legend-item\" data-series=\"" + name + "\"><rect x=\"" +
           Num(kWidth - kRight + 12) + "\" y=\"" + Num(ly) +
           "\" width=\"12\" height=\"4\" fill=\"" + color + "\"/><text x=\"" +
           Num(kWidth - kRight + 30) + "\" y=\"" + Num(ly + 6) + "\">" +
           Escape(s.label.empty() ? s.name : s.label) + "</text></g>\n";
  }
  return svg + "</svg>\n";
}

// One MoA layer's share of tokens per expert (rows) at each evaluation (columns).
std::string HeatMap(int64_t layer, const std::vector<nlohmann::json>& records) {
  std::vector<std::pair<int64_t, std::vector<double>>> columns;
  for (const nlohmann::json& record : records) {
    const auto router = record.find("router");
    if (router == record.end()) continue;
    for (const nlohmann::json& entry : *router) {
      if (entry.value("layer", -1) != layer) continue;
      columns.emplace_back(record.value("step", int64_t{0}),
                           entry.value("share", std::vector<double>{}));
    }
  }
  if (columns.empty()) return "";
  const size_t experts = columns[0].second.size();
  const double cell_w = std::max(4.0, std::min(40.0, 560.0 / static_cast<double>(columns.size())));
  const double cell_h = 18;
  const double width = 90 + cell_w * static_cast<double>(columns.size()) + 20;
  const double height = 40 + cell_h * static_cast<double>(experts) + 24;
  std::string svg = "<svg class=\"heatmap\" data-layer=\"" + std::to_string(layer) + "\" width=\"" +
                    Num(width) + "\" height=\"" + Num(height) +
                    "\" xmlns=\"http://www.w3.org/2000/svg\">\n";
  svg += "<text x=\"4\" y=\"16\" class=\"chart-title\">layer " + std::to_string(layer) +
         ": share of tokens per expert</text>\n";
  for (size_t e = 0; e < experts; ++e) {
    svg += "<text class=\"tick\" x=\"84\" y=\"" + Num(40 + cell_h * (e + 0.7)) +
           "\" text-anchor=\"end\">expert " + std::to_string(e) + "</text>\n";
  }
  for (size_t c = 0; c < columns.size(); ++c) {
    for (size_t e = 0; e < experts && e < columns[c].second.size(); ++e) {
      const double share = std::clamp(columns[c].second[e], 0.0, 1.0);
      const int shade = static_cast<int>(std::lround(255 * (1 - share)));
      char fill[16];
      std::snprintf(fill, sizeof(fill), "#%02x%02xff", shade, shade);
      svg += "<rect class=\"cell\" data-layer=\"" + std::to_string(layer) + "\" data-expert=\"" +
             std::to_string(e) + "\" data-step=\"" + std::to_string(columns[c].first) +
             "\" data-share=\"" + Num(share, "%.4g") + "\" x=\"" +
             Num(90 + cell_w * static_cast<double>(c)) + "\" y=\"" +
             Num(40 + cell_h * static_cast<double>(e)) + "\" width=\"" + Num(cell_w) +
             "\" height=\"" + Num(cell_h) + "\" fill=\"" + fill + "\"><title>step " +
             std::to_string(columns[c].first) + ", expert " + std::to_string(e) + ": " +
             Num(100 * share, "%.1f") + "%</title></rect>\n";
    }
  }
  svg += "<text class=\"tick\" x=\"90\" y=\"" + Num(height - 6) + "\">step " +
         std::to_string(columns.front().first) + "</text><text class=\"tick\" x=\"" +
         Num(width - 20) + "\" y=\"" + Num(height - 6) + "\" text-anchor=\"end\">step " +
         std::to_string(columns.back().first) + "</text>\n";
  return svg + "</svg>\n";
}

std::string RunSection(const RunReport& run) {
  std::string html = "<section class=\"run\" data-run=\"" + Escape(run.name) + "\">\n<h2>" +
                     Escape(run.name) + "</h2>\n";
  if (run.records.empty()) return html + "<p>no results.jsonl records yet</p>\n</section>\n";
  html += "<p>" + std::to_string(run.records.size()) + " evaluations, steps " +
          std::to_string(run.records.front().value("step", 0)) + " to " +
          std::to_string(run.records.back().value("step", 0)) +
          (run.selected_step >= 0 ? "; selected by training-domain validation: step " +
                                        std::to_string(run.selected_step)
                                  : "") +
          ".</p>\n";
  std::set<int64_t> test_envs;
  const nlohmann::json& first = run.records.front();
  if (first.contains("args") && first["args"].contains("test_envs")) {
    for (const nlohmann::json& e : first["args"]["test_envs"]) test_envs.insert(e.get<int64_t>());
  }
  std::vector<Series> accuracy;
  for (const std::string& key : AccuracySeries(first)) {
    Series s{key.substr(0, key.size() - 4), {}, key.find("_out_") != std::string::npos, ""};
    s.label = s.name + (test_envs.count(std::atoi(key.c_str() + 3)) ? " (test)" : "");
    for (const nlohmann::json& record : run.records) {
      if (record.contains(key)) s.points.emplace_back(record["step"].get<double>(), record[key]);
    }
    accuracy.push_back(s);
  }
  html += LineChart("accuracy", "accuracy per (domain, split); dashed: out splits", accuracy,
                    run.selected_step);
  std::vector<Series> losses;
  Series train{"train loss", {}, false, ""};
  Series validation{"mean out loss", {}, true, ""};
  for (const nlohmann::json& record : run.records) {
    const double step = record["step"].get<double>();
    if (record.contains("loss")) train.points.emplace_back(step, record["loss"]);
    double sum = 0;
    int count = 0;
    for (auto it = record.begin(); it != record.end(); ++it) {
      if (it.key().rfind("env", 0) == 0 && it.key().find("_out_loss") != std::string::npos) {
        sum += it->get<double>(), ++count;
      }
    }
    if (count > 0) validation.points.emplace_back(step, sum / count);
  }
  losses.push_back(train);
  losses.push_back(validation);
  html += LineChart("loss", "loss", losses, run.selected_step);
  std::set<int64_t> layers;
  for (const nlohmann::json& record : run.records) {
    if (!record.contains("router")) continue;
    for (const nlohmann::json& entry : record["router"]) layers.insert(entry.value("layer", -1));
  }
  if (!layers.empty()) {
    html += "<h3>router: expert usage over training</h3>\n<div class=\"heatmaps\">\n";
    for (int64_t layer : layers) html += HeatMap(layer, run.records);
    html += "</div>\n";
  }
  if (!run.selection_table.empty()) {
    html += "<h3>model selection</h3>\n<pre class=\"selection\">" + Escape(run.selection_table) +
            "</pre>\n";
  }
  return html + "</section>\n";
}

std::string ConfigDiff(const std::vector<RunReport>& runs) {
  std::set<std::string> keys;
  for (const RunReport& run : runs) {
    for (const auto& [key, value] : run.config) keys.insert(key);
  }
  std::string header = "<tr><th>key</th>";
  for (const RunReport& run : runs) header += "<th>" + Escape(run.name) + "</th>";
  header += "</tr>\n";
  std::string differing, all;
  for (const std::string& key : keys) {
    std::set<std::string> values;
    std::string row = "<tr><td>" + Escape(key) + "</td>";
    for (const RunReport& run : runs) {
      const auto found = run.config.find(key);
      const std::string value = found == run.config.end() ? "(unset)" : found->second;
      values.insert(value);
      row += "<td>" + Escape(value) + "</td>";
    }
    row += "</tr>\n";
    all += row;
    if (values.size() > 1) differing += row;
  }
  std::string html = "<section class=\"config\">\n<h2>configuration</h2>\n";
  if (runs.size() > 1) {
    html += differing.empty() ? "<p>the runs' configurations are the same</p>\n"
                              : "<table class=\"config-diff\">" + header + differing + "</table>\n";
  }
  html += "<details><summary>every key</summary><table class=\"config-all\">" + header + all +
          "</table></details>\n</section>\n";
  return html;
}

constexpr char kStyle[] = R"(body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px}
h3{font-size:15px}svg{display:block;margin:8px 0}.plot-area{fill:#fafafa;stroke:#999}
.grid{stroke:#e4e4e4}.tick,.axis-label{font-size:11px;fill:#555}.chart-title{font-size:13px}
.curve{fill:none;stroke-width:1.6}.selected-step{stroke:#000;stroke-width:1.5;stroke-dasharray:2,2}
.legend-item{cursor:pointer;font-size:11px}.legend-item.off{opacity:.35}.hidden{display:none}
.heatmaps{display:flex;flex-wrap:wrap;gap:12px}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}pre{background:#f5f5f5;padding:8px}
)";

constexpr char kScript[] = R"(document.querySelectorAll('.legend-item').forEach(function (item) {
  item.addEventListener('click', function () {
    var chart = item.closest('svg'), name = item.getAttribute('data-series');
    chart.querySelectorAll('.curve, .point').forEach(function (el) {
      if (el.getAttribute('data-series') === name) el.classList.toggle('hidden');
    });
    item.classList.toggle('off');
  });
});
document.body.setAttribute('data-ready', '1');
)";

}  // namespace

std::vector<std::string> AccuracySeries(const nlohmann::json& record) {
  std::vector<std::pair<std::pair<int, int>, std::string>> keyed;
  for (auto it = record.begin(); it != record.end(); ++it) {
    const std::string& key = it.key();
    const bool in = key.size() > 7 && key.compare(key.size() - 7, 7, "_in_acc") == 0;
    const bool out = key.size() > 8 && key.compare(key.size() - 8, 8, "_out_acc") == 0;
    if (key.rfind("env", 0) != 0 || !(in || out)) continue;
    keyed.push_back({{std::atoi(key.c_str() + 3), out ? 1 : 0}, key});
  }
  std::sort(keyed.begin(), keyed.end());
  std::vector<std::string> keys;
  for (const auto& entry : keyed) keys.push_back(entry.second);
  return keys;
}

std::string RenderHtmlReport(const ReportInput& input) {
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" +
                     Escape(input.title) + "</title><style>" + kStyle + "</style></head>\n<body>\n";
  html += "<h1>" + Escape(input.title) + "</h1>\n";
  for (const auto& [folder, tables] : input.sweeps) {
    html += "<section class=\"sweep\" data-sweep=\"" + Escape(folder) + "\">\n<h2>sweep " +
            Escape(folder) + "</h2>\n<pre class=\"collect\">" + Escape(tables) +
            "</pre>\n</section>\n";
  }
  for (const RunReport& run : input.runs) html += RunSection(run);
  if (!input.runs.empty()) html += ConfigDiff(input.runs);
  return html + "<script>" + kScript + "</script>\n</body></html>\n";
}

}  // namespace moa::report
