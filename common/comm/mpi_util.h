// MPI at the boundary: every MPI call goes through POLIS_MPI_CHECK, which
// turns a failure into a Status; every wait has a deadline and backs off
// (sleeps) instead of spinning, so idle roles leave the core to ranks that
// compute (on 2 cores, 4 ranks share them).
#pragma once

#include <mpi.h>

#include <chrono>
#include <functional>
#include <string>

#include "common/proto/control.pb.h"
#include "common/status.h"

namespace polis::comm {

Status MpiStatus(int rc, const char* expr, const char* file, int line);

#define POLIS_MPI_CHECK(expr)                                                        \
  do {                                                                               \
    int _polis_rc = (expr);                                                          \
    if (_polis_rc != MPI_SUCCESS)                                                    \
      return ::polis::comm::MpiStatus(_polis_rc, #expr, __FILE__, __LINE__);         \
  } while (0)

// Tags on the data communicator (raw buffers).
enum DataTag : int {
  kTagPushHeader = 10,
  kTagPushData = 11,
  kTagPullHeader = 12,
  kTagPullData = 13,
  kTagFinalParams = 14,
};
// Tag on the control communicator (serialized ControlMessage).
constexpr int kTagControl = 1;

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

// Waits until all requests complete or the deadline passes. `what` describes
// the wait for the timeout message ("pull reply from server rank 1").
// `idle` runs between polls (e.g. to answer control messages); it may fail.
Status WaitAll(int n, MPI_Request* reqs, Clock::time_point deadline,
               const std::function<std::string()>& what,
               const std::function<Status()>& idle = nullptr);

Clock::time_point DeadlineFromNow();

// Control messages: a serialized ControlMessage with tag kTagControl.
Status SendControl(MPI_Comm comm, int dest, const proto::ControlMessage& msg);
// Returns NotFound if no message is waiting (non-blocking).
Status TryRecvControl(MPI_Comm comm, int source, int* from, proto::ControlMessage* msg);
// Blocks (with back-off) until a message from `source` (or MPI_ANY_SOURCE).
Status RecvControl(MPI_Comm comm, int source, int* from, proto::ControlMessage* msg,
                   Clock::time_point deadline, const std::string& what);

}  // namespace polis::comm
