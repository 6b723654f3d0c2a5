#include "trainer/fault_injection.h"

#include <signal.h>

#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <vector>

#include <absl/strings/numbers.h>
#include <absl/strings/str_split.h>

namespace moa::trainer {

absl::StatusOr<InjectedFault> InjectedFault::FromEnvironment() {
  InjectedFault fault;
  const char* value = std::getenv("MOA_INJECT_FAULT");
  if (value == nullptr || *value == '\0') return fault;
  const std::vector<std::string> parts = absl::StrSplit(value, ':');
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        std::string("MOA_INJECT_FAULT = '") + value +
        "': expected RANK:STEP:KIND with KIND throw, kill, nan or stop");
  };
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &fault.rank) ||
      !absl::SimpleAtoi(parts[1], &fault.step) || fault.rank < 0 || fault.step < 0) {
    return bad();
  }
  if (parts[2] == "throw") {
    fault.kind = Kind::kThrow;
  } else if (parts[2] == "kill") {
    fault.kind = Kind::kKill;
  } else if (parts[2] == "nan") {
    fault.kind = Kind::kNan;
  } else if (parts[2] == "stop") {
    fault.kind = Kind::kStop;
  } else {
    return bad();
  }
  return fault;
}

void InjectedFault::Apply(int64_t this_rank, int64_t this_step, torch::Tensor* loss) const {
  if (kind == Kind::kNone || this_rank != rank || this_step != step) return;
  switch (kind) {
    case Kind::kThrow:
      throw std::runtime_error("injected fault (MOA_INJECT_FAULT) at step " + std::to_string(step));
    case Kind::kKill:
      raise(SIGKILL);
      break;
    case Kind::kNan:
      *loss = *loss * std::numeric_limits<float>::quiet_NaN();
      break;
    case Kind::kStop:
      raise(SIGUSR1);
      break;
    case Kind::kNone:
      break;
  }
}

}  // namespace moa::trainer
