#include "trainer/progress.h"

#include <algorithm>
#include <cstdio>

namespace moa::trainer {

std::string FormatDuration(double seconds) {
  const long long s = static_cast<long long>(std::max(0.0, seconds));
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", s / 3600, (s / 60) % 60);
  } else {
    std::snprintf(text, sizeof(text), "%lldm%02llds", s / 60, s % 60);
  }
  return text;
}

double EtaSeconds(int64_t step, int64_t steps, int64_t freq, double train_seconds,
                  int64_t evals_done, double eval_seconds) {
  if (step >= steps - 1) return 0.0;
  const int64_t remaining_evals =
      (steps - 1) / freq - step / freq + ((steps - 1) % freq != 0 ? 1 : 0);
  const double per_eval = evals_done > 0 ? eval_seconds / evals_done : 0.0;
  return train_seconds / (step + 1) * (steps - step - 1) + per_eval * remaining_evals;
}

std::string FormatEvaluation(const nlohmann::ordered_json& record,
                             const std::vector<std::string>& domains,
                             const std::vector<int64_t>& test_envs, int64_t steps, double elapsed,
                             double eta) {
  const int64_t step = record["step"].get<int64_t>();
  char line[256];
  std::snprintf(line, sizeof(line), "step %lld/%lld | loss %.4f | %.0f img/s | elapsed %s | eta %s",
                static_cast<long long>(step), static_cast<long long>(steps),
                record["loss"].get<double>(), record["images_per_s"].get<double>(),
                FormatDuration(elapsed).c_str(), FormatDuration(eta).c_str());
  std::string table = line;
  table += "\n      domain      role     in_acc    out_acc";
  for (int64_t e = 0; e < static_cast<int64_t>(domains.size()); ++e) {
    const bool test = std::find(test_envs.begin(), test_envs.end(), e) != test_envs.end();
    auto cell = [&](const std::string& key) -> std::string {
      if (!record.contains(key)) return "         -";
      char c[16];
      std::snprintf(c, sizeof(c), " %9.2f%%", 100.0 * record[key].get<double>());
      return c;
    };
    char head[64];
    std::snprintf(head, sizeof(head), "\n  %10s  %8s", domains[e].c_str(), test ? "test" : "train");
    table += head + cell("env" + std::to_string(e) + "_in_acc") +
             cell("env" + std::to_string(e) + "_out_acc");
  }
  if (record.contains("router")) {
    // One line for all MoA layers: the mean share of each expert, the layers' smallest and
    // largest expert share, drops and the mean auxiliary loss (per layer in results.jsonl).
    const auto& layers = record["router"];
    const size_t experts = layers[0]["share"].size();
    std::vector<double> mean(experts, 0.0);
    double low = 1.0, high = 0.0, aux = 0.0;
    int64_t dropped = 0;
    for (const auto& entry : layers) {
      for (size_t e = 0; e < experts; ++e) {
        const double v = entry["share"][e].get<double>();
        mean[e] += v / static_cast<double>(layers.size());
        low = std::min(low, v);
        high = std::max(high, v);
      }
      dropped += entry["dropped"].get<int64_t>();
      aux += entry["aux_loss"].get<double>();
    }
    table += "\n  router, " + std::to_string(layers.size()) + " MoA layers: expert shares %";
    for (double v : mean) {
      char cell[16];
      std::snprintf(cell, sizeof(cell), " %.1f", 100.0 * v);
      table += cell;
    }
    char tail[128];
    std::snprintf(tail, sizeof(tail), " (per layer %.1f to %.1f) | dropped %lld | aux %.2e",
                  100.0 * low, 100.0 * high, static_cast<long long>(dropped), aux);
    table += tail;
  }
  return table;
}

std::string FormatStepLine(int64_t step, int64_t steps, double loss, double images_per_s,
                           double eta) {
  char line[160];
  std::snprintf(line, sizeof(line), "step %lld/%lld | loss %.4f | %.0f img/s | eta %s",
                static_cast<long long>(step), static_cast<long long>(steps), loss, images_per_s,
                FormatDuration(eta).c_str());
  return line;
}

std::string DescribeDomains(const data::DomainDataset& dataset) {
  std::string text;
  for (const data::Domain& d : dataset.domains) {
    text += (text.empty() ? "" : ", ") + d.name + " (" + std::to_string(d.in.size()) + " in, " +
            std::to_string(d.out.size()) + " out)";
  }
  return text;
}

}  // namespace moa::trainer
