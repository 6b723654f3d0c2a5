// Conversions between LibTorch exceptions and absl::Status at module boundaries.
#pragma once

#include <exception>
#include <string>
#include <utility>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <c10/util/Exception.h>

namespace moa {

/// An exception's message for a user: LibTorch's without its C++ backtrace (c10::Error's what()
/// appends one), any other's what().
inline std::string ExceptionMessage(const std::exception& e) {
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&e)) {
    return torch_error->what_without_backtrace();
  }
  return e.what();
}

/// Runs `fn` and turns any exception (c10::Error, std::exception) into an InternalError whose
/// message starts with `context` (ExceptionMessage: no backtrace).
template <typename Fn>
absl::Status CatchToStatus(const std::string& context, Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(context + ": " + ExceptionMessage(e));
  }
}

/// Throws a std::runtime_error carrying the status message when `status` is not ok; used where
/// an error must unwind through LibTorch code that cannot return a Status.
void ThrowIfError(const absl::Status& status);

}  // namespace moa
