#include "common/comm/wait.h"

#include <time.h>

#include <algorithm>

#include "common/env.h"

namespace polis::comm {

void Backoff::Pause() {
  // A few cheap polls first (the answer is often already there), then sleep,
  // doubling up to the cap.
  if (spins_ < 4) {
    ++spins_;
    return;
  }
  sleep_us_ = sleep_us_ == 0 ? 5 : std::min(sleep_us_ * 2, std::max(env::IdleMaxMicros(), 5));
  timespec ts{0, static_cast<long>(sleep_us_) * 1000};
  nanosleep(&ts, nullptr);
}

namespace {
bool single_threaded = false;
}  // namespace

void SetSingleThreaded(bool on) { single_threaded = on; }
bool SingleThreaded() { return single_threaded; }

Clock::time_point DeadlineFromNow() {
  return Clock::now() + std::chrono::seconds(env::TimeoutSeconds());
}

}  // namespace polis::comm
