// PsClient: a worker's side of key-range push/pull (ps-lite's small API).
//
// A round moves the flat gradient buffer to the servers and the fresh
// parameters back, in pieces (common/comm/ps_pieces.h), as raw buffers on a data channel:
// no copies, no protobuf. Push(k) starts sending piece k straight from the
// gradient buffer (as soon as backward has produced it); Finish(header)
// sends what is left and every server's header and posts the receives of
// the reply straight into the parameter buffer. WaitHeaders(ts) returns once
// every server has answered (the round's step and flags are then known)
// while the parameter pieces may still be landing; WaitPieces / WaitPulls
// complete them, so the next forward can wait for layer i's parameters only
// before running layer i. PushPull + Wait is the whole round in one go.
//
// Every wait backs off and has a deadline whose message names the servers
// that have not answered; while waiting for headers, a STOP from the
// coordinator ends the wait with CANCELLED, and so does a reply flagged
// kPullStopped (a stopping server answers every push so, without
// parameters). One round at a time; one thread.
//
// Leaving: Leave() completes the round in flight (every server answers
// every push it receives), waits for the parameter pieces of the servers
// that sent them, drops the receives of those that answered "stopped", and
// says goodbye to every server (a header flagged kPushLeave on the header
// tag, so it arrives after this worker's last push). A stopping server ends
// once every worker has left: no message either side sent is then left
// unreceived, and no send waits on a peer that has gone
// (docs/design/parameter-server.md, "Stopping").
#pragma once

#include <string>
#include <vector>

#include "common/comm/channel.h"
#include "common/comm/key_ranges.h"
#include "common/comm/ps_pieces.h"
#include "common/role.h"
#include "common/status.h"

namespace polis::comm {

class PsClient {
 public:
  // `pieces` must come from PlanPieces over the same `ranges` (the servers
  // compute the same plan). `ctrl`/`coordinator`: see above.
  PsClient(Channel* data, std::vector<int> server_ranks, std::vector<KeyRange> ranges,
           std::vector<Piece> pieces, Channel* ctrl = nullptr, int coordinator = 0);

  // Withdraws the receives still posted (a rank failing without Leave), so
  // no reply lands in the parameter buffer once its owner is gone.
  ~PsClient();
  PsClient(const PsClient&) = delete;
  PsClient& operator=(const PsClient&) = delete;

  const std::vector<Piece>& pieces() const { return pieces_; }

  // Starts sending piece k of `grads`; it must stay valid until WaitHeaders.
  // Pushing a piece twice in a round is a bug.
  Status Push(int k, const float* grads);
  // The same for a secure-aggregation payload (privacy.secure_aggregation):
  // piece k of a flat buffer of masked fixed-point values, 4 bytes each like
  // a float, so the servers' receives do not change size.
  Status Push(int k, const uint32_t* payload);
  // Ends the push side of the round (see above). Completes the previous
  // round's pulls first. Returns the round's timestamp. `grads` may be null
  // when every piece has been pushed.
  StatusOr<int64_t> Finish(const PushHeader& header, const float* grads, float* params);
  // Every server's reply header; they must agree on the flags. Every push
  // send has completed on return, so `grads` may be overwritten.
  Status WaitHeaders(int64_t ts, PullHeader* reply);
  // The given pull pieces have landed in `params`.
  Status WaitPieces(const int* ids, int n);
  Status WaitPulls();
  bool pulls_pending() const { return pulls_pending_; }
  // The end of this worker's rounds (see above); later calls do nothing.
  // Fails if pieces were pushed without Finish (a round half sent).
  Status Leave();

  // The whole round: Push(every piece) + Finish; Wait = WaitHeaders + WaitPulls.
  StatusOr<int64_t> PushPull(const PushHeader& header, const float* grads, float* params);
  Status Wait(int64_t ts, PullHeader* reply);

 private:
  Status PollControl();
  Status PushBytes(int k, const void* base);
  std::string Unanswered() const;
  void DropPieces(int server);
  bool Stopped(int server) const { return (pull_[server].flags & kPullStopped) != 0; }

  Channel* data_;
  Channel* ctrl_;
  int coordinator_;
  std::vector<int> servers_;
  std::vector<KeyRange> ranges_;
  std::vector<Piece> pieces_;
  std::vector<PushHeader> push_;
  std::vector<PullHeader> pull_;
  // [0, S): header receives; [S, 2S): header sends; then one push send per
  // piece: these complete together in WaitHeaders.
  std::vector<Request> round_reqs_;
  std::vector<Request> pull_reqs_;  // one per piece
  std::vector<char> pushed_;
  int64_t pending_ = -1;
  bool pulls_pending_ = false;
  bool round_open_ = false;  // Finish sent the header; not every server has answered
  bool left_ = false;
};

}  // namespace polis::comm
