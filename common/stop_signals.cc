#include "common/stop_signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace moa {
namespace {

std::atomic<int> first_signal{0};
std::atomic<int> signals_received{0};
int grace = 0;
struct sigaction previous_usr1, previous_term;

void OnStopSignal(int signal_number) {
  if (signals_received.fetch_add(1) > 0) {
    // A second signal: end now, by that signal's default action.
    struct sigaction default_action = {};
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    sigaction(signal_number, &default_action, nullptr);
    raise(signal_number);
    return;
  }
  first_signal.store(signal_number);
  // If the step and the checkpoint take longer than the grace period, SIGALRM's default action
  // ends the process.
  if (grace > 0) alarm(static_cast<unsigned>(grace));
}

}  // namespace

StopSignals::StopSignals(int grace_seconds) {
  first_signal.store(0);
  signals_received.store(0);
  grace = grace_seconds;
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, &previous_usr1);
  sigaction(SIGTERM, &action, &previous_term);
}

StopSignals::~StopSignals() {
  alarm(0);
  sigaction(SIGUSR1, &previous_usr1, nullptr);
  sigaction(SIGTERM, &previous_term, nullptr);
}

bool StopSignals::requested() const { return first_signal.load() != 0; }

}  // namespace moa
