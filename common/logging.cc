#include "common/logging.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

#include "common/error.h"

namespace moa {
namespace {

LogLevel g_min_level = LogLevel::kInfo;
std::string g_rank_prefix;  // NOLINT: set once at start-up.
std::mutex g_log_mutex;

const char* LevelTag(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "D";
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarning:
      return "W";
    case LogLevel::kError:
      return "E";
  }
  return "?";
}

}  // namespace

void SetLogLevel(LogLevel level) { g_min_level = level; }
void SetLogRankPrefix(const std::string& prefix) { g_rank_prefix = prefix; }

Log::Log(LogLevel level) : level_(level), enabled_(level >= g_min_level) {}

Log::~Log() {
  if (!enabled_) return;
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&t, &tm);
  char when[32];
  std::strftime(when, sizeof(when), "%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::fprintf(stderr, "%s %s %s%s\n", LevelTag(level_), when, g_rank_prefix.c_str(),
               stream_.str().c_str());
}

void ThrowIfError(const absl::Status& status) {
  if (!status.ok()) throw std::runtime_error(std::string(status.message()));
}

}  // namespace moa
