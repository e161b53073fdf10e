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

// Single-threaded mode, for the simulation driver (benchmarks/scaling/,
// docs/design/simulation.md): the process has one thread, which calls what
// the communication thread would, and nothing else progresses while it
// waits. Waits then block inside MPI (MPI_Waitall) instead of polling with
// back-off and a wall-clock deadline: under SimGrid's SMPI (MPI_THREAD_SINGLE,
// simulated time) a poll loop would burn real time and advance simulated
// time by the simulator's cost per failed test, and a hung peer is reported
// by the simulator itself. Off by default; set once, before any wait.
void SetSingleThreaded(bool on);
bool SingleThreaded();

}  // namespace polis::comm
