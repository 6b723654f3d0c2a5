// SWAD (Cha et al. 2021): dense weight averaging between an overfit-aware start and end. Every
// training step adds the trainable parameters to the current segment; each evaluation closes the
// segment, tagged with the training domains' mean validation loss, and the loss-valley rule
// decides which segments enter the final average and when the valley is dead (training stops).
//
// LossValley holds the rule alone (segment indices and losses in, decisions out), so it can be
// tested on hand-written loss sequences; Swad adds the parameter averages. Only trainable tensors
// are averaged, on their device; under data parallelism every rank averages identical parameters.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace moa::trainer {

/// The paper's rule. With losses L_0, L_1, ... of consecutive segments:
/// - convergence at c: the first c such that L_c is the minimum of the n_converge losses
///   L_c .. L_{c + n_converge - 1}; the threshold is (1 + tolerance_ratio) x their mean; the
///   average starts at c, reaching back over at most n_tolerance - n_converge earlier segments
///   while their losses stay under the threshold;
/// - after c, a segment p is included once n_tolerance losses from p are known if the smallest of
///   them is under the threshold; if it is not, the valley is dead (train no further);
/// - at the end, the undecided segments are included oldest first while the smallest remaining
///   loss is under the threshold; if the run never converged, the last segment alone is used.
///
/// NOTE [SWAD reference quirks]: the reference (docs/method.md, Quirks Q11) starts its average with
/// the convergence segment and then adds Q[j+1:] of the first n_tolerance - n_converge + 1 entries
/// of its long window, which counts that segment twice and skips the earliest eligible older one;
/// when convergence comes before n_tolerance segments exist it can count later segments twice too;
/// and it weights segments, not steps, equally. The paper's rule is the default (each segment once,
/// every step equally); `swad.rule = reference` reproduces the reference, since the two can select
/// different weights.
enum class SwadRule { kPaper, kReference };

class LossValley {
 public:
  LossValley(int64_t n_converge, int64_t n_tolerance, double tolerance_ratio,
             SwadRule rule = SwadRule::kPaper);

  struct Decision {
    std::vector<int64_t> include;  // segments that enter the average now
    bool dead = false;             // the valley is dead: stop training
  };
  /// The loss of the next segment (segments are numbered 0, 1, ... in order).
  Decision Add(double loss);
  /// Segments to include when training ends without a dead valley.
  std::vector<int64_t> Finish() const;

  bool converged() const { return converged_; }
  double threshold() const { return threshold_; }
  int64_t start() const { return start_; }
  const std::vector<double>& losses() const { return losses_; }
  int64_t next_pending() const { return next_pending_; }
  /// Restores the state Add() built from `losses` (for resume).
  void Restore(const std::vector<double>& losses);

 private:
  /// Whether the last n_converge losses start with their minimum; if so marks the convergence
  /// segment and sets the threshold.
  bool DetectConvergence();
  /// The reference's decision once the newest loss is recorded and the valley is alive.
  Decision AddReference();
  std::vector<int64_t> FinishReference() const;

  int64_t n_converge_, n_tolerance_;
  double ratio_;
  SwadRule rule_;
  int64_t converge_segment_ = -1;
  std::vector<double> losses_;
  bool converged_ = false;
  bool dead_ = false;
  double threshold_ = 0;
  int64_t start_ = -1;
  int64_t next_pending_ = 0;  // the oldest undecided segment after convergence
};

/// Running averages of the trainable parameters per segment, and the final SWAD average.
class Swad {
 public:
  Swad(std::vector<std::pair<std::string, torch::Tensor>> params, int64_t n_converge,
       int64_t n_tolerance, double tolerance_ratio, SwadRule rule = SwadRule::kPaper);

  /// After every optimizer step.
  void Step();
  /// At every evaluation: closes the current segment with its validation loss. Returns true when
  /// the valley is dead and training should stop.
  bool CloseSegment(double validation_loss);
  /// The SWAD parameters (name -> tensor) at the end of training: the average over every step of
  /// the included segments (the paper's dense averaging; the reference weights segments equally,
  /// which differs only for its one-step first segment), or the last segment's average when the
  /// run never converged.
  std::map<std::string, torch::Tensor> Finish();

  /// The state a full-state checkpoint needs (the open segment included: a run stopped on a
  /// signal saves between evaluations), and its restoration.
  void Export(std::vector<std::pair<std::string, torch::Tensor>>* tensors,
              std::map<std::string, std::string>* metadata) const;
  void Import(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
              const std::map<std::string, std::string>& metadata);

  const LossValley& valley() const { return valley_; }
  /// Steps in the average, a segment counted as often as it was added.
  int64_t averaged_steps() const { return final_steps_; }
  int64_t start_step() const { return start_step_; }
  int64_t end_step() const { return end_step_; }

 private:
  struct Segment {
    std::map<std::string, torch::Tensor> sum;
    int64_t steps = 0;
    int64_t first_step = 0;
    int64_t last_step = 0;
  };
  void Include(int64_t segment);

  std::vector<std::pair<std::string, torch::Tensor>> params_;
  LossValley valley_;
  int64_t n_tolerance_;
  Segment current_;
  std::map<int64_t, Segment> closed_;  // segments not yet decided or dropped
  std::map<std::string, torch::Tensor> final_sum_;
  int64_t final_steps_ = 0;
  double final_weight_ = 0;  // steps (paper) or segments (reference)
  SwadRule rule_;
  int64_t step_ = 0;
  int64_t start_step_ = -1, end_step_ = -1;
};

}  // namespace moa::trainer
