// What a run prints while it trains: durations, the time left, and the table of one evaluation
// record (every domain's accuracies and, for MoA, one line of router statistics).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"

namespace moa::trainer {

/// "1h02m" or "3m05s".
std::string FormatDuration(double seconds);

/// Seconds left after `step` of `steps` with an evaluation every `freq` steps and at the last:
/// the mean step time so far for the remaining steps plus the mean evaluation time for the
/// remaining evaluations.
double EtaSeconds(int64_t step, int64_t steps, int64_t freq, double train_seconds,
                  int64_t evals_done, double eval_seconds);

/// A log line between evaluations: "step S/N | loss L | R img/s | eta T".
std::string FormatStepLine(int64_t step, int64_t steps, double loss, double images_per_s,
                           double eta);

/// "name (I in, O out), ..." for every domain of a loaded dataset.
std::string DescribeDomains(const data::DomainDataset& dataset);

/// The progress line and per-domain table of one results.jsonl record; `domains` are the
/// environments' names, `test_envs` their held-out indices.
std::string FormatEvaluation(const nlohmann::ordered_json& record,
                             const std::vector<std::string>& domains,
                             const std::vector<int64_t>& test_envs, int64_t steps, double elapsed,
                             double eta);

}  // namespace moa::trainer
