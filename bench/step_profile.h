// Where a training step's time goes: runs steps under LibTorch's profiler (Kineto, CPU
// activities), attributes each operator's self time (its duration less its children's) to a
// family (GEMM, attention, norm, elementwise, routing/dispatch, optimizer, copies, other) and a
// phase (forward with the loss, backward, optimizer step), and prints ms per step; the rest of
// each phase's wall time, outside any operator, is framework overhead.
#pragma once

#include <ATen/record_function.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace moa::bench {

inline std::string OpFamily(const std::string& name) {
  const auto has = [&name](const char* part) { return name.find(part) != std::string::npos; };
  if (has("adam") || has("_foreach")) return "optimizer";
  if (has("addmm") || has("::mm") || has("bmm") || has("mkldnn") || has("matmul") || has("linear"))
    return "GEMM";
  if (has("scaled_dot_product") || has("softmax") || has("flash") || has("attention"))
    return "attention";
  if (has("layer_norm") || has("norm")) return "norm";
  if (has("topk") || has("sort") || has("scatter") || has("gather") || has("index") ||
      has("cumsum") || has("bincount") || has("one_hot") || has("nonzero") || has("masked"))
    return "routing/dispatch";
  if (has("copy") || has("clone") || has("contiguous") || has("cat") || has("stack") || has("to") ||
      has("empty") || has("zeros") || has("fill"))
    return "copies/alloc";
  if (has("add") || has("mul") || has("div") || has("sub") || has("gelu") || has("exp") ||
      has("sum") || has("mean") || has("cross_entropy") || has("nll") || has("neg") || has("pow") ||
      has("sqrt") || has("where") || has("clamp") || has("max") || has("cos"))
    return "elementwise";
  return "other ops";
}

// `step(phase)` runs one training step, calling phase("forward"), phase("backward") and
// phase("optimizer") before each part and phase("") at its end; the profile covers `steps` steps
// after one unprofiled step. Phases are user-scope ranges in the profile, so an operator belongs
// to the phase range it starts in, and a phase's own self time is framework overhead.
inline void PrintStepProfile(
    const std::string& title,
    const std::function<void(const std::function<void(const char*)>&)>& step, int steps) {
  namespace prof = torch::autograd::profiler;
  step([](const char*) {});
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO, false, false);
  const std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  std::unique_ptr<at::RecordFunction> range;
  const auto phase = [&range](const char* name) {
    range.reset();
    if (*name == '\0') return;
    range = std::make_unique<at::RecordFunction>(at::RecordScope::USER_SCOPE);
    if (range->isActive()) range->before(name);
  };
  for (int i = 0; i < steps; ++i) step(phase);
  range.reset();
  const std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();

  struct Interval {
    int64_t start, end;
    std::string name;
    int64_t child = 0;
  };
  const std::vector<std::string> phases = {"forward", "backward", "optimizer"};
  const auto is_phase = [&phases](const std::string& name) {
    return std::find(phases.begin(), phases.end(), name) != phases.end();
  };
  std::map<uint64_t, std::vector<Interval>> by_thread;
  std::vector<Interval> phase_ranges;
  for (const auto& e : result->events()) {
    if (e.isAsync()) continue;
    Interval interval{static_cast<int64_t>(e.startNs()), static_cast<int64_t>(e.endNs()), e.name()};
    if (is_phase(interval.name)) phase_ranges.push_back(interval);
    by_thread[e.startThreadId()].push_back(interval);
  }
  std::map<std::string, std::map<std::string, double>> ms;  // family -> phase -> ms per step
  std::map<std::string, double> by_op;                      // "phase op" -> ms per step
  for (auto& [thread, events] : by_thread) {
    // Nested intervals: an event's children start and end inside it.
    std::sort(events.begin(), events.end(), [](const Interval& a, const Interval& b) {
      return a.start != b.start ? a.start < b.start : a.end > b.end;
    });
    std::vector<Interval*> stack;
    for (Interval& e : events) {
      while (!stack.empty() && stack.back()->end <= e.start) stack.pop_back();
      if (!stack.empty()) stack.back()->child += e.end - e.start;
      stack.push_back(&e);
    }
    for (const Interval& e : events) {
      const double self = static_cast<double>(e.end - e.start - e.child) / 1e6 / steps;
      if (is_phase(e.name)) {
        ms["framework (outside ops)"][e.name] += self;
        continue;
      }
      for (const Interval& p : phase_ranges) {
        if (e.start >= p.start && e.start < p.end) {
          ms[OpFamily(e.name)][p.name] += self;
          by_op[p.name + " " + e.name] += self;
          break;
        }
      }
    }
  }
  std::map<std::string, double> wall;
  for (const Interval& p : phase_ranges) {
    wall[p.name] += static_cast<double>(p.end - p.start) / 1e6 / steps;
  }
  std::printf("\n%s: ms per step by operator family (self time) and phase\n", title.c_str());
  std::printf("%-24s %10s %10s %10s %10s\n", "family", "forward", "backward", "optimizer", "total");
  for (const auto& [family, per_phase] : ms) {
    double total = 0;
    std::printf("%-24s", family.c_str());
    for (const std::string& p : phases) {
      const double v = per_phase.count(p) ? per_phase.at(p) : 0.0;
      total += v;
      std::printf(" %10.2f", v);
    }
    std::printf(" %10.2f\n", total);
  }
  double total = 0;
  std::printf("%-24s", "wall (profiled)");
  for (const std::string& p : phases) {
    total += wall[p];
    std::printf(" %10.2f", wall[p]);
  }
  std::printf(" %10.2f\n", total);
  std::vector<std::pair<double, std::string>> top;
  for (const auto& [op, v] : by_op) top.emplace_back(v, op);
  std::sort(top.rbegin(), top.rend());
  std::printf("heaviest operators (phase, name: ms per step):");
  for (size_t i = 0; i < std::min<size_t>(8, top.size()); ++i) {
    std::printf("%s %s %.2f", i ? ";" : "", top[i].second.c_str(), top[i].first);
  }
  std::printf("\n");
}

}  // namespace moa::bench
