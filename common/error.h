// Conversions between LibTorch exceptions and absl::Status at module boundaries.
#pragma once

#include <exception>
#include <string>
#include <utility>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace moa {

/// Runs `fn` and turns any exception (c10::Error, std::exception) into an InternalError whose
/// message starts with `context`.
template <typename Fn>
absl::Status CatchToStatus(const std::string& context, Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(context + ": " + e.what());
  }
}

/// Throws a std::runtime_error carrying the status message when `status` is not ok; used where
/// an error must unwind through LibTorch code that cannot return a Status.
void ThrowIfError(const absl::Status& status);

}  // namespace moa
