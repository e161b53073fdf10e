// Direct all-reduce for ranks that share a host: a reduce-scatter in which
// every rank sends each block of its buffer straight to the block's owner,
// then an all-gather in which every owner sends its summed block straight to
// every other rank. Each rank sends and receives 2(n-1)/n of the buffer, like
// the ring and Rabenseifner, but all its messages of a phase are posted at
// once: with a shared-memory transport in which the receiver copies out of
// the sender's memory, a rank needs its peers only to have entered the call
// (reduce-scatter) and to have finished their own block (all-gather), two
// handoffs at any group size instead of the ring's 2(n-1) or Rabenseifner's
// 2 log2(n). Messages are whole blocks (no segments), received into scratch.
//
// Identical bits on every rank: each block is summed once, by its owner, in
// a fixed order, and copied. 16-bit wires: senders round their blocks, the
// owner adds them decoded to its own fp32 values and rounds the sum once;
// the all-gather forwards those wire bytes.
//
// The two phases are also callable apart, with fewer block owners than ranks
// (ranks 0..owners-1 own one block each, the others only send and receive):
// the hierarchical algorithm (allreduce_hierarchical.h) runs them inside a
// host around an all-reduce of each owner's block across hosts.
//
// Not thread-safe: used by one MpiCommunicator on its calling thread.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>

#include "common/comm/allreduce_context.h"
#include "common/comm/communicator.h"
#include "common/status.h"

namespace polis::comm::internal {

class AllreduceDirect {
 public:
  // Allocates the request arrays for ctx->size() ranks.
  explicit AllreduceDirect(CollectiveContext* ctx);
  // Bytes of ctx->scratch() a call of `count` floats over `size` ranks needs
  // (`owners` block owners; 0 = size).
  static int64_t ScratchBytes(int64_t count, WireType wire, int size, int owners = 0);
  // In-place sum. ctx->BeginCall has been called; count > 0.
  Status Run(float* data, int64_t count, WireType wire);

  // The phases, for at most PieceFloats(owners) floats (every message then
  // fits an int) and 1 <= owners <= size. ReduceScatter leaves the fp32 sum
  // of this rank's block (OwnBlock) in place, unrounded; Allgather rounds it
  // (16-bit wires) and sends it to every rank, and receives the others'.
  // Between the two the caller may change the own block only; the same
  // count, wire and owners go to both. ReduceScatter leaves its sends open
  // for Allgather to finish unless `finish_sends`: then it waits for them,
  // and the phases of another piece may run before this piece's Allgather
  // (the pipelined hierarchical all-reduce: reduce-scatter k+1, then
  // all-gather k).
  struct Block {
    int64_t offset = 0;
    int64_t length = 0;  // 0 for a rank that owns no block
  };
  static int64_t PieceFloats(int owners);
  Block OwnBlock(int64_t count, int owners) const;
  Status ReduceScatter(float* data, int64_t count, WireType wire, int owners,
                       bool finish_sends = false);
  Status Allgather(float* data, int64_t count, WireType wire, int owners);

 private:
  struct Cut;
  Status Fail(Status st);

  CollectiveContext* ctx_;
  int n_;
  // Indexed by peer rank (this rank's entry stays MPI_REQUEST_NULL).
  std::unique_ptr<MPI_Request[]> rs_send_, rs_recv_, ag_send_, ag_recv_;
  std::unique_ptr<int[]> peers_;
  std::unique_ptr<bool[]> all_true_, all_false_;
};

}  // namespace polis::comm::internal
