// Waiting without spinning: every wait in the transport has a deadline
// (POLIS_TIMEOUT_S from its start) and backs off (a few cheap polls, then
// sleeps doubling up to POLIS_IDLE_MAX_US), so idle roles leave the core to
// ranks that compute (on 2 cores, 4 ranks share them). No MPI here.
#pragma once

#include <chrono>

namespace polis::comm {

using Clock = std::chrono::steady_clock;

// Sleeps a little longer each call, up to env POLIS_IDLE_MAX_US.
class Backoff {
 public:
  void Reset() { sleep_us_ = 0; spins_ = 0; }
  void Pause();

 private:
  int spins_ = 0;
  int sleep_us_ = 0;
};

Clock::time_point DeadlineFromNow();

}  // namespace polis::comm
