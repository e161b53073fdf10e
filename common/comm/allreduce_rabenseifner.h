// Rabenseifner's all-reduce: reduce-scatter by recursive halving, then
// all-gather by recursive doubling, over MPI_Isend/MPI_Irecv on the
// communicator's duplicate.
//
// For p the largest power of two <= n, the p ranks that take part run
// log2(p) halving steps (partner rank ^ p/2 first, down to rank ^ 1: each
// sends the half of its region the partner keeps and adds in the half it
// keeps), which leaves rank v with the full sum of block v of p, and then
// log2(p) doubling steps in the reverse order that gather the blocks. Each
// rank sends and receives 2(p-1)/p of the buffer, like the ring, but in
// 2 log2(p) handoffs instead of 2(n-1): what oversubscribed ranks pay for.
// With n not a power of two the first 2(n-p) ranks pair up first, as in
// recursive doubling: each even one hands its buffer to its odd neighbour,
// sits the steps out and gets the result back at the end.
//
// Each exchange is cut into segments of POLIS_ALLREDUCE_SEGMENT_KB wire bytes:
// `depth` receives are posted ahead into the cache-resident segment slots
// and added in as they land; sends are posted as far ahead as the window
// allows, so a partner can pull them while this rank is descheduled.
// All-gather segments land in place.
//
// Identical bits on every rank: every element of the sum is computed by one
// rank only (the owner of its block) and then copied. 16-bit wires: a rank
// rounds what it sends (its fp32 partial sum) to the wire type and adds what
// it receives, decoded, to its own unrounded fp32 partial; the owner of a
// block rounds the final sum once, and the all-gather and the hand-back to
// the folded ranks forward those wire bytes unchanged.
//
// Not thread-safe: used by one MpiCommunicator on its calling thread.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "common/comm/allreduce_context.h"
#include "common/comm/communicator.h"
#include "common/status.h"

namespace polis::comm::internal {

class AllreduceRabenseifner {
 public:
  static constexpr int kMaxDepth = 8;
  // Uses the segment slots in ctx->slots() (depth * segment_bytes; reserved
  // here if the ring has not already).
  AllreduceRabenseifner(CollectiveContext* ctx, int64_t segment_bytes, int depth);
  // Bytes of ctx->scratch() a call of `count` floats needs.
  static int64_t ScratchBytes(int64_t count, WireType wire);
  // In-place sum. ctx->BeginCall has been called; count > 0.
  Status Run(float* data, int64_t count, WireType wire);

 private:
  // Sends in flight at most (their requests wait in a ring of this size).
  static constexpr int kSendSlots = 64;

  // A range of elements of the caller's buffer.
  struct Part {
    int64_t offset = 0;
    int64_t length = 0;
  };
  // What happens to a received segment.
  enum class Landing {
    kReduce,   // into a slot, then added into the caller's buffer
    kInPlace,  // straight into place (fp32 buffer, or the wire copy, then decoded)
  };

  // One exchange with `peer`: sends `send` (rounded to the wire type first
  // if `encode`) and receives `recv`, both cut into segments. Either may be
  // empty. Send units [wait_from, wait_to) must complete before the first
  // receive is posted (they read from where it lands). The sends may still
  // be in flight when it returns.
  Status Exchange(int peer, Part send, bool encode, Part recv, Landing landing,
                  int64_t wait_from = 0, int64_t wait_to = 0);
  // Posts send unit `send_seq_` of `part`'s segment k to `peer`, first
  // waiting for the unit that last held its request slot.
  Status PostSend(int peer, Part part, int64_t k, bool encode);
  // Waits until send unit `v` has completed (a no-op if it already has).
  Status WaitSend(int64_t v);
  // Waits for every send still in flight.
  Status WaitAllSends();
  // After a failure: cancels the open receives and sends.
  Status Fail(Status st);

  CollectiveContext* ctx_;
  int64_t segment_bytes_;
  int depth_;
  // Per call.
  float* f32_ = nullptr;
  uint16_t* w16_ = nullptr;  // the whole-buffer wire copy (16-bit wires)
  WireType wire_ = WireType::kFloat32;
  int64_t seg_ = 0;  // elements per segment
  int64_t send_seq_ = 0;  // send units posted so far in this call
  MPI_Request recv_[kMaxDepth];
  bool recv_flags_[kMaxDepth] = {};
  MPI_Request send_[kSendSlots];
  bool send_flags_[kSendSlots];
  int64_t send_unit_[kSendSlots];
  int send_peer_[kSendSlots];
};

}  // namespace polis::comm::internal
