// Recursive-doubling all-reduce for small messages: log2(p) rounds in which
// partners exchange the whole buffer and add, p the largest power of two
// <= n. With n not a power of two the first 2(n-p) ranks pair up: each even
// one hands its buffer to its odd neighbour, sits the rounds out, and gets
// the result back at the end (MPICH's scheme). Latency: log2(p) (+2)
// messages instead of the ring's 2(n-1).
//
// fp32: partners add the same two values (a + b == b + a), so every rank
// ends with the same bits. 16-bit wires: each round both partners round their
// own buffer to the wire type and add the two decoded buffers, and the final
// result is rounded once more before it goes to the folded ranks, so again
// every rank holds the same bits.
//
// Not thread-safe: used by one MpiCommunicator on its calling thread.
#pragma once

#include <cstdint>

#include "common/comm/allreduce_context.h"
#include "common/comm/communicator.h"
#include "common/status.h"

namespace polis::comm::internal {

class AllreduceRecursiveDoubling {
 public:
  explicit AllreduceRecursiveDoubling(CollectiveContext* ctx) : ctx_(ctx) {}
  // Bytes of ctx->scratch() a call of `count` floats needs.
  static int64_t ScratchBytes(int64_t count, WireType wire) { return count * 4; }
  // In-place sum. ctx->BeginCall has been called; count > 0.
  Status Run(float* data, int64_t count, WireType wire);

 private:
  // One exchange of `count` elements with `peer`, in messages of at most
  // 1 GiB: sends `send` (if not null), receives into `recv` (if not null).
  Status Exchange(int peer, const void* send, void* recv, int64_t count, int64_t esize);

  CollectiveContext* ctx_;
};

}  // namespace polis::comm::internal
