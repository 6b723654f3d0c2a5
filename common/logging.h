// Minimal logging for moa: timestamped lines to stderr, prefixed with the rank when more than one
// process runs. Example: moa::Log(moa::LogLevel::kInfo) << "step " << step;
#pragma once

#include <sstream>
#include <string>

namespace moa {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

/// Sets the process-wide minimum level and the rank prefix ("" for a single process).
void SetLogLevel(LogLevel level);
void SetLogRankPrefix(const std::string& prefix);

/// Accumulates one line and writes it atomically to stderr when destroyed.
class Log {
 public:
  explicit Log(LogLevel level);
  ~Log();
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  template <typename T>
  Log& operator<<(const T& value) {
    if (enabled_) stream_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  bool enabled_;
  std::ostringstream stream_;
};

}  // namespace moa
