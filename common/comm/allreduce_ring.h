// Ring all-reduce: reduce-scatter then all-gather around the ring
// rank -> rank+1, over MPI_Isend/MPI_Irecv on the communicator's duplicate.
//
// The buffer is cut into n chunks (64-byte aligned); each step of the
// 2(n-1) steps moves one chunk to the right neighbour, so each rank sends
// and receives 2(n-1)/n of the buffer: bandwidth-optimal. Chunks are cut into
// segments of POLIS_ALLREDUCE_SEGMENT_KB wire bytes and pipelined: a segment
// is sent on as soon as it is reduced (up to 64 sends in flight, so a
// neighbour can pull everything that is ready while this rank is descheduled),
// `depth` receives are posted ahead, and reduce-scatter segments land in
// small cache-resident slots instead of a buffer the size of the chunk.
//
// 16-bit wires: step 0 sends the rounded input; each reduce step decodes,
// adds in fp32 and re-encodes; the owner of a reduced chunk rounds its own
// copy the same way, and the all-gather forwards the wire bytes unchanged, so
// every rank decodes the same bytes: bit-identical results.
//
// Not thread-safe: used by one MpiCommunicator on its calling thread.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "common/comm/allreduce_context.h"
#include "common/comm/communicator.h"
#include "common/status.h"

namespace polis::comm::internal {

class AllreduceRing {
 public:
  static constexpr int kMaxDepth = 8;
  // Allocates the segment slots in ctx->slots() (depth * segment_bytes).
  AllreduceRing(CollectiveContext* ctx, int64_t segment_bytes, int depth);
  // Bytes of ctx->scratch() a call of `count` floats needs.
  static int64_t ScratchBytes(int64_t count, WireType wire);
  // In-place sum over the ring. ctx->BeginCall has been called; count > 0.
  Status Run(float* data, int64_t count, WireType wire);

 private:
  // Sends in flight at most (their requests wait in a ring of this size).
  static constexpr int kSendSlots = 64;

  CollectiveContext* ctx_;
  int64_t segment_bytes_;
  int depth_;
  MPI_Request recv_[kMaxDepth];
  MPI_Request send_[kSendSlots];
  int64_t send_unit_[kSendSlots];
};

}  // namespace polis::comm::internal
