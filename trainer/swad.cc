#include "trainer/swad.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <sstream>

namespace moa::trainer {

LossValley::LossValley(int64_t n_converge, int64_t n_tolerance, double tolerance_ratio,
                       SwadRule rule)
    : n_converge_(n_converge),
      n_tolerance_(std::max(n_tolerance, n_converge)),
      ratio_(tolerance_ratio),
      rule_(rule) {}

bool LossValley::DetectConvergence() {
  const int64_t k = static_cast<int64_t>(losses_.size()) - 1;
  if (k + 1 < n_converge_) return false;
  const int64_t c = k - n_converge_ + 1;
  const auto first = losses_.begin() + c;
  if (*std::min_element(first, losses_.end()) < *first) return false;
  converged_ = true;
  converge_segment_ = start_ = c;
  threshold_ = (1.0 + ratio_) * std::accumulate(first, losses_.end(), 0.0) /
               static_cast<double>(n_converge_);
  return true;
}

// The reference's LossValley, quirks included (see NOTE [SWAD reference quirks]).
LossValley::Decision LossValley::AddReference() {
  Decision decision;
  const int64_t k = static_cast<int64_t>(losses_.size()) - 1;
  const int64_t window_start = std::max<int64_t>(0, k - n_tolerance_ + 1);  // its smooth_Q
  if (!converged_) {
    if (!DetectConvergence()) return decision;
    const int64_t c = converge_segment_;
    decision.include.push_back(c);  // the copy the average starts from
    const int64_t q_size = std::min<int64_t>(n_tolerance_ - n_converge_ + 1, k - window_start + 1);
    int64_t j = 0;
    for (int64_t i = q_size - 1; i >= 0; --i) {
      if (losses_[window_start + i] > threshold_) {
        j = i + 1;
        break;
      }
    }
    for (int64_t i = j + 1; i < q_size; ++i) decision.include.push_back(window_start + i);
    return decision;
  }
  if (window_start < converge_segment_) return decision;
  if (*std::min_element(losses_.begin() + window_start, losses_.end()) > threshold_) {
    dead_ = true;
    decision.dead = true;
    return decision;
  }
  decision.include.push_back(window_start);
  return decision;
}

std::vector<int64_t> LossValley::FinishReference() const {
  const int64_t k = static_cast<int64_t>(losses_.size()) - 1;
  std::vector<int64_t> include;
  for (int64_t p = std::max<int64_t>(0, k - n_tolerance_ + 1) + 1; p <= k; ++p) {
    if (*std::min_element(losses_.begin() + p, losses_.end()) > threshold_) break;
    include.push_back(p);
  }
  return include;
}

LossValley::Decision LossValley::Add(double loss) {
  Decision decision;
  losses_.push_back(loss);
  if (dead_) {
    decision.dead = true;
    return decision;
  }
  if (rule_ == SwadRule::kReference) return AddReference();
  const int64_t k = static_cast<int64_t>(losses_.size()) - 1;
  if (!converged_) {
    if (!DetectConvergence()) return decision;
    const int64_t c = converge_segment_;
    const int64_t earliest = std::max<int64_t>(0, c - (n_tolerance_ - n_converge_));
    while (start_ - 1 >= earliest && losses_[start_ - 1] <= threshold_) --start_;
    for (int64_t s = start_; s <= c; ++s) decision.include.push_back(s);
    next_pending_ = c + 1;
  }
  // Decide every pending segment whose n_tolerance losses are known.
  while (next_pending_ + n_tolerance_ - 1 <= k) {
    const auto window = losses_.begin() + next_pending_;
    if (*std::min_element(window, window + n_tolerance_) > threshold_) {
      dead_ = true;
      decision.dead = true;
      return decision;
    }
    decision.include.push_back(next_pending_++);
  }
  return decision;
}

std::vector<int64_t> LossValley::Finish() const {
  std::vector<int64_t> include;
  if (losses_.empty()) return include;
  if (!converged_) return {static_cast<int64_t>(losses_.size()) - 1};
  if (dead_) return include;
  if (rule_ == SwadRule::kReference) return FinishReference();
  for (int64_t p = next_pending_; p < static_cast<int64_t>(losses_.size()); ++p) {
    if (*std::min_element(losses_.begin() + p, losses_.end()) > threshold_) break;
    include.push_back(p);
  }
  return include;
}

void LossValley::Restore(const std::vector<double>& losses) {
  *this = LossValley(n_converge_, n_tolerance_, ratio_, rule_);
  for (double l : losses) Add(l);
}

Swad::Swad(std::vector<std::pair<std::string, torch::Tensor>> params, int64_t n_converge,
           int64_t n_tolerance, double tolerance_ratio, SwadRule rule)
    : params_(std::move(params)),
      valley_(n_converge, n_tolerance, tolerance_ratio, rule),
      n_tolerance_(std::max(n_tolerance, n_converge)),
      rule_(rule) {}

void Swad::Step() {
  torch::NoGradGuard no_grad;
  if (current_.steps == 0) current_.first_step = step_;
  for (const auto& [name, p] : params_) {
    auto it = current_.sum.find(name);
    if (it == current_.sum.end()) {
      current_.sum[name] = p.detach().clone().to(torch::kFloat64);
    } else {
      it->second.add_(p.detach());
    }
  }
  current_.last_step = step_++;
  ++current_.steps;
}

void Swad::Include(int64_t segment) {
  auto it = closed_.find(segment);
  if (it == closed_.end()) return;
  const Segment& s = it->second;
  if (start_step_ < 0 || s.first_step < start_step_) start_step_ = s.first_step;
  end_step_ = std::max(end_step_, s.last_step);
  // The paper weights every step equally; the reference every segment (its average).
  const bool by_segment = rule_ == SwadRule::kReference;
  for (const auto& [name, sum] : s.sum) {
    const torch::Tensor term = by_segment ? sum / static_cast<double>(s.steps) : sum;
    auto f = final_sum_.find(name);
    if (f == final_sum_.end()) {
      final_sum_[name] = term.clone();
    } else {
      f->second.add_(term);
    }
  }
  final_steps_ += s.steps;
  final_weight_ += by_segment ? 1.0 : static_cast<double>(s.steps);
  if (!by_segment) closed_.erase(it);  // the reference may add a segment again
}

bool Swad::CloseSegment(double validation_loss) {
  const int64_t index = static_cast<int64_t>(valley_.losses().size());
  closed_[index] = std::move(current_);
  current_ = Segment();
  const LossValley::Decision decision = valley_.Add(validation_loss);
  for (int64_t s : decision.include) Include(s);
  // Segments that can no longer enter the average are dropped from memory: before convergence
  // the look-back reaches at most n_tolerance segments back; after it, only undecided ones count.
  const int64_t keep_from = valley_.converged() && rule_ == SwadRule::kPaper
                                ? valley_.next_pending()
                                : index - n_tolerance_;
  for (auto it = closed_.begin(); it != closed_.end();) {
    it = it->first < keep_from ? closed_.erase(it) : std::next(it);
  }
  return decision.dead;
}

void Swad::Export(std::vector<std::pair<std::string, torch::Tensor>>* tensors,
                  std::map<std::string, std::string>* metadata) const {
  for (const auto& [name, sum] : final_sum_) tensors->emplace_back("swad/final/" + name, sum);
  for (const auto& [name, sum] : current_.sum) tensors->emplace_back("swad/current/" + name, sum);
  (*metadata)["swad_current"] = std::to_string(current_.steps) + "," +
                                std::to_string(current_.first_step) + "," +
                                std::to_string(current_.last_step);
  for (const auto& [id, segment] : closed_) {
    for (const auto& [name, sum] : segment.sum) {
      tensors->emplace_back("swad/segment/" + std::to_string(id) + "/" + name, sum);
    }
    (*metadata)["swad_segment_" + std::to_string(id)] = std::to_string(segment.steps) + "," +
                                                        std::to_string(segment.first_step) + "," +
                                                        std::to_string(segment.last_step);
  }
  std::string losses;
  for (double l : valley_.losses()) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.17g", l);
    losses += (losses.empty() ? "" : ",") + std::string(text);
  }
  (*metadata)["swad_losses"] = losses;
  char weight[32];
  std::snprintf(weight, sizeof(weight), "%.17g", final_weight_);
  (*metadata)["swad_weight"] = weight;
  (*metadata)["swad_counters"] = std::to_string(final_steps_) + "," + std::to_string(step_) + "," +
                                 std::to_string(start_step_) + "," + std::to_string(end_step_);
}

void Swad::Import(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<double> losses;
  std::stringstream list(metadata.at("swad_losses"));
  for (std::string item; std::getline(list, item, ',');) losses.push_back(std::stod(item));
  valley_.Restore(losses);
  std::stringstream counters(metadata.at("swad_counters"));
  std::string item;
  std::getline(counters, item, ',');
  final_steps_ = std::stoll(item);
  final_weight_ = std::stod(metadata.at("swad_weight"));
  std::getline(counters, item, ',');
  step_ = std::stoll(item);
  std::getline(counters, item, ',');
  start_step_ = std::stoll(item);
  std::getline(counters, item, ',');
  end_step_ = std::stoll(item);
  final_sum_.clear();
  closed_.clear();
  current_ = Segment();
  // Sums come back where the parameters live (a checkpoint may come from another device).
  const torch::Device device =
      params_.empty() ? torch::Device(torch::kCPU) : params_.front().second.device();
  for (const auto& [key, stored] : tensors) {
    const torch::Tensor t = stored.to(device);
    if (key.rfind("swad/final/", 0) == 0) {
      final_sum_[key.substr(11)] = t.clone();
    } else if (key.rfind("swad/current/", 0) == 0) {
      current_.sum[key.substr(13)] = t.clone();
    } else if (key.rfind("swad/segment/", 0) == 0) {
      const std::string rest = key.substr(13);
      const size_t slash = rest.find('/');
      const int64_t id = std::stoll(rest.substr(0, slash));
      closed_[id].sum[rest.substr(slash + 1)] = t.clone();
    }
  }
  // "steps,first_step,last_step" of a segment.
  auto read_counters = [](const std::string& text, Segment* segment) {
    std::stringstream fields(text);
    std::string field;
    std::getline(fields, field, ',');
    segment->steps = std::stoll(field);
    std::getline(fields, field, ',');
    segment->first_step = std::stoll(field);
    std::getline(fields, field, ',');
    segment->last_step = std::stoll(field);
  };
  for (auto& [id, segment] : closed_) {
    read_counters(metadata.at("swad_segment_" + std::to_string(id)), &segment);
  }
  // Checkpoints written at evaluations before the open segment was saved have none.
  auto current = metadata.find("swad_current");
  if (current != metadata.end()) read_counters(current->second, &current_);
}

std::map<std::string, torch::Tensor> Swad::Finish() {
  for (int64_t s : valley_.Finish()) Include(s);
  std::map<std::string, torch::Tensor> averaged;
  for (const auto& [name, p] : params_) {
    if (final_weight_ > 0) {
      averaged[name] = (final_sum_.at(name) / final_weight_).to(p.scalar_type());
    } else {
      averaged[name] = p.detach().clone();
    }
  }
  return averaged;
}

}  // namespace moa::trainer
