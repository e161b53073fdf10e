// Channel: tagged point-to-point messages between the ranks of a job — the
// transport every role talks through (STYLE.md habit 1). The roles never
// see MPI: polis-train builds MPI channels (common/comm/mpi_transport.h),
// unit tests build in-process ones (common/comm/local_transport.h).
//
// Semantics are MPI's, the subset the roles use: messages from one sender
// on one tag arrive in the order sent (non-overtaking); a receive names its
// sender (or kAnySource) and tag and takes the first matching message; the
// buffer of a non-blocking call must stay valid until its request
// completes. A message longer than the receive's buffer is an error.
// Counts are bytes; one message carries at most 2^31 - 1 of them.
//
// Thread-compatible: one thread calls a channel at a time, unless the
// implementation says more.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/comm/wait.h"
#include "common/status.h"

namespace polis::comm {

constexpr int kAnySource = -1;

// Tags of the data channel (raw buffers); the parameter-server pieces use
// kTagPushPieceBase / kTagPullPieceBase + slot (common/comm/ps_pieces.h),
// checkpoint transfer 30-32 (common/checkpoint_transfer.h).
enum DataTag : int {
  kTagPushHeader = 10,
  kTagPushData = 11,
  kTagPullHeader = 12,
  kTagPullData = 13,
  kTagFinalParams = 14,
  kTagServerNorm = 15,  // a server's partial squared gradient norm (clip_grad_norm)
  kTagRecords = 16,     // a RecordBatch, coordinator -> worker (dataset.source COORDINATOR)
};
// Tag of the control channel (a serialized ControlMessage).
constexpr int kTagControl = 1;

// A non-blocking send or receive in flight. Opaque to the caller; a default
// one (or one that has completed) is not pending.
class Request {
 public:
  bool pending() const { return handle_ != 0; }
  uint64_t handle() const { return handle_; }
  void set_handle(uint64_t h) { handle_ = h; }

 private:
  uint64_t handle_ = 0;
};

// What a probe found: the sender and the size of the first waiting message.
struct Probed {
  int source = 0;
  int64_t bytes = 0;
};

class Channel {
 public:
  virtual ~Channel() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  virtual Status Isend(const void* buf, int64_t bytes, int dest, int tag, Request* req) = 0;
  virtual Status Irecv(void* buf, int64_t bytes, int source, int tag, Request* req) = 0;
  // Completes what has arrived: each of reqs[0, n) that completed becomes
  // not pending; *all_done tells whether none is pending any more.
  virtual Status Test(Request* reqs, int n, bool* all_done) = 0;
  // Withdraws pending requests and waits until they are gone (a send
  // withdrawn late may still have been delivered).
  virtual void Cancel(Request* reqs, int n) = 0;
  // Non-blocking: true and the message's sender and size if a message from
  // `source` (or kAnySource) on `tag` is waiting.
  virtual StatusOr<bool> Probe(int source, int tag, Probed* found) = 0;
  // Blocking forms. Send may return before the receiver has the message.
  virtual Status Send(const void* buf, int64_t bytes, int dest, int tag) = 0;
  virtual Status Recv(void* buf, int64_t bytes, int source, int tag) = 0;
  // Blocks until reqs[0, n) have all completed, with no deadline: the
  // single-threaded mode's wait (SingleThreaded(), common/comm/wait.h). The
  // MPI channel blocks in MPI_Waitall; the default polls Test with back-off.
  virtual Status WaitBlocking(Request* reqs, int n);
};

// Polls `channel` until reqs[0, n) have all completed, backing off between
// polls; `idle` runs between polls (e.g. to answer control messages) and
// may fail. Past `deadline`, Timeout naming `what()`. In single-threaded
// mode (common/comm/wait.h) it is channel->WaitBlocking: no polls, no idle,
// no deadline.
Status WaitAll(Channel* channel, Request* reqs, int n, Clock::time_point deadline,
               const std::function<std::string()>& what, const std::function<Status()>& idle = nullptr);

}  // namespace polis::comm
