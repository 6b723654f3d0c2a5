// Status propagation helpers for absl::Status / absl::StatusOr (Debian's Abseil 20220623 lacks
// them): MOA_RETURN_IF_ERROR(expr) and MOA_ASSIGN_OR_RETURN(lhs, expr).
#pragma once

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#define MOA_STATUS_CONCAT_INNER(a, b) a##b
#define MOA_STATUS_CONCAT(a, b) MOA_STATUS_CONCAT_INNER(a, b)

#define MOA_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status moa_status_ = (expr);       \
    if (!moa_status_.ok()) return moa_status_; \
  } while (0)

#define MOA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#define MOA_ASSIGN_OR_RETURN(lhs, expr) \
  MOA_ASSIGN_OR_RETURN_IMPL(MOA_STATUS_CONCAT(moa_statusor_, __LINE__), lhs, expr)
