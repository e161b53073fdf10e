// StallWarning: the coordinator's periodic warning while the job makes no
// progress (Horovod's stall inspector habit). While no worker completes a
// step for POLIS_STALL_WARN_S, one log line every POLIS_STALL_WARN_S names
// the ranks the job waits on and what each last reported; the job goes on
// until a heartbeat deadline (POLIS_HEARTBEAT_TIMEOUT_S) or POLIS_TIMEOUT_S
// ends it, as before.
//
// The clock and the line only; the coordinator decides who is waited on
// (coordinator.cc, StallWaitingOn). Not thread-safe: the coordinator's loop
// owns it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/comm/wait.h"

namespace polis::coordinator {

// One rank as the warning shows it.
struct RankActivity {
  std::string name;   // "rank 3 (worker on node2)"
  std::string doing;  // "epoch 1, step 40, last message 12 s ago, mostly computing (2.9 of 3.0 s)"
};

// What a worker's last progress report says it spent its time on, in a few
// words: "mostly computing (2.9 of 3.0 s)", "mostly communicating (...)",
// "mostly waiting for data (...)"; "" when the report covers no time.
std::string LastWindowSummary(double compute_s, double comm_s, double wait_s);

// "stall: no worker has completed a step for 62 s; waiting on rank 3 (...):
// ...; held: rank 2 (...): ..." (`held` may be empty).
std::string StallWarningLine(double stalled_s, const std::vector<RankActivity>& waiting_on,
                             const std::vector<RankActivity>& held);

class StallWarning {
 public:
  // every_s <= 0: never due.
  StallWarning(double every_s, comm::Clock::time_point start);

  // A worker completed a step (or an epoch): the stall, if any, is over.
  void Progressed(comm::Clock::time_point now);

  // Seconds without progress when a warning is due now (every `every_s`
  // while the stall lasts), else nullopt.
  std::optional<double> Due(comm::Clock::time_point now);

 private:
  double every_s_;
  comm::Clock::time_point last_progress_, last_warning_;
};

}  // namespace polis::coordinator
