// Hierarchical all-reduce for ranks on several hosts: a reduce-scatter
// inside each host (shared memory), an all-reduce of each slice across hosts
// by the ranks with the same local index (TCP), an all-gather inside the
// host.
//
// The groups are sub-communicators of the communicator's duplicate, made
// once by MakeMpiCommunicator from the placement's host of every rank
// (MPI_Comm_split; MPI_COMM_TYPE_SHARED cannot tell emulated hosts apart):
// `local`, the ranks of this host, and `cross`, the ranks with this rank's
// local index on the other hosts. Each is a CollectiveContext of its own
// (its own deadline, stall inspector and scratch), and the phases are Polis'
// own algorithms run on them: the direct exchange's two phases inside the
// host (allreduce_direct.h) and the ring across hosts (measured faster than
// Rabenseifner over TCP at 4 hosts; the same exchange at 2), so no algorithm
// is forked.
//
// Hosts with unequal rank counts: the buffer is cut into S slices, S the
// smallest rank count of any host; local ranks 0..S-1 own one slice each and
// reduce it across hosts, the others only hand their values to the owners
// and receive the result (3+1 ranks: S = 1, the three ranks of the first
// host reduce onto one, which all-reduces with the single rank of the
// other host, then hands the sum back). The bytes crossing a host's link
// stay 2(H-1)/H of the buffer, H hosts, as with equal hosts.
//
// Identical bits on every rank: each element is summed inside its host by
// the slice's owner, across hosts by one rank of the cross group (the ring
// gives every member the same bits) and then copied. 16-bit
// wires: local senders round their values, the owner adds them decoded to
// its own fp32 values, the cross-host all-reduce rounds as the ring does,
// and the owner rounds the result once more (a no-op across two or more
// hosts) before the all-gather forwards the wire bytes.
//
// Pipelined (large calls, ranks on more than one host and more than one on
// this host, MPI_THREAD_MULTIPLE): the buffer is cut into pieces; while the
// calling thread runs the host phases of one piece, a helper thread of this
// object runs the cross-host ring of the piece before, so the link stays
// busy and only the first reduce-scatter and the last all-gather are not
// hidden behind it. The two threads use different communicators (host and
// cross-host groups) and disjoint parts of the buffer; the helper blocks on
// a condition variable between calls. Every rank cuts the same pieces (a
// function of the count, the wire and the topology only).
//
// Not thread-safe: used by one MpiCommunicator on its calling thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/comm/allreduce_context.h"
#include "common/comm/allreduce_direct.h"
#include "common/comm/allreduce_ring.h"
#include "common/comm/communicator.h"
#include "common/status.h"

namespace polis::comm::internal {

class AllreduceHierarchical {
 public:
  // `local`: this host's ranks; `cross`: this rank's slice group across
  // hosts (null for a rank whose local index is >= owners); `owners`: S
  // above; `max_local`: the most ranks on any host. The contexts are kept;
  // scratch for `max_count` floats is reserved in them now.
  AllreduceHierarchical(CollectiveContext* ctx, std::unique_ptr<CollectiveContext> local,
                        std::unique_ptr<CollectiveContext> cross, int owners, int hosts,
                        int max_local, int64_t max_count, int64_t segment_bytes, int depth);
  ~AllreduceHierarchical();
  AllreduceHierarchical(const AllreduceHierarchical&) = delete;
  AllreduceHierarchical& operator=(const AllreduceHierarchical&) = delete;
  // Grows the sub-contexts' scratch for `count` floats (outside the hot path;
  // once, as MpiCommunicator does for its own).
  void Reserve(int64_t count);
  // In-place sum. ctx->BeginCall has been called; count > 0.
  Status Run(float* data, int64_t count, WireType wire);

  int hosts() const { return hosts_; }
  int owners() const { return owners_; }
  // How many pieces Run cuts `count` floats into (1: not pipelined). The
  // same on every rank of the communicator.
  int Pieces(int64_t count, WireType wire) const;

 private:
  Status RunPieces(float* data, int64_t count, WireType wire, int64_t piece);
  Status RunPipelined(float* data, int64_t count, WireType wire, int pieces);
  // The helper thread's side: cross-host rings of the pieces handed to it.
  void HelperLoop();
  // Hands the ring of data[0, count) to the helper (count 0: nothing to do).
  void Post(float* data, int64_t count, WireType wire);
  // Waits until the helper has finished `pieces` pieces of this call;
  // returns the first failure among them.
  Status WaitHelper(int64_t pieces);

  CollectiveContext* ctx_;
  std::unique_ptr<CollectiveContext> local_;
  std::unique_ptr<CollectiveContext> cross_;  // null: this rank owns no slice
  int owners_;
  int hosts_;
  int64_t reserved_ = -1;
  AllreduceDirect direct_;  // on local_
  std::unique_ptr<AllreduceRing> ring_;  // on cross_
  bool may_pipeline_ = false;  // several hosts, several ranks on one, MPI_THREAD_MULTIPLE

  // The helper (started on the first pipelined call). Guarded by mu_.
  struct Piece {
    float* data;
    int64_t count;
    WireType wire;
  };
  std::mutex mu_;
  std::condition_variable work_ready_;
  std::condition_variable piece_done_;
  std::vector<Piece> queue_;  // pieces posted and not yet taken
  int64_t taken_ = 0;         // index into queue_ of the next piece
  int64_t done_ = 0;          // pieces finished in this call
  Status helper_status_;      // the first failure in this call
  bool stop_ = false;
  std::thread helper_;
};

}  // namespace polis::comm::internal
