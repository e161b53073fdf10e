// Internal to the MPI communicator (mpi_communicator.cc) and its algorithms
// (allreduce_ring.cc, allreduce_recursive_doubling.cc,
// allreduce_rabenseifner.cc): the duplicated
// communicator, the per-call deadline, the waits that back off, the stall
// inspector that names the ranks that have not entered a collective, and the
// preallocated buffers. Owned by one MpiCommunicator and used by one thread
// at a time, except AnswerStallQueries, which any thread may call (the
// pipelined hierarchical all-reduce waits in two contexts at once, each
// answering for the other).
#pragma once

#include <mpi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/comm/communicator.h"
#include "common/comm/mpi_util.h"
#include "common/status.h"

namespace polis::comm::internal {

// Tags on the communicator's own duplicate (no other traffic there).
enum CollectiveTag : int {
  kTagRing = 201,
  kTagRecursiveDoubling = 202,
  kTagRabenseifner = 203,
  kTagDirect = 204,
  kTagStallQuery = 210,  // "which call are you in?" (int64 call number)
  kTagStallReply = 211,  // the answer (int64 call number)
};

// A 64-byte aligned buffer, touched once when it grows so that the hot path
// never page-faults (CLUSTER-NOTES: faults cost tens of µs each here); large
// ones ask for transparent huge pages. Not copyable. In the simulation build
// (POLIS_SMPI, benchmarks/scaling/) it comes from SMPI_SHARED_MALLOC, which
// SimGrid folds (every rank's buffer maps the same pages) unless run with
// --cfg=smpi/shared-malloc:none.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  // Makes capacity() >= bytes; returns true if it had to grow (the old
  // contents are dropped).
  bool Reserve(size_t bytes);
  std::byte* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  std::byte* data_ = nullptr;
  size_t capacity_ = 0;
  size_t mapped_ = 0;
};

// What a call is, for messages; formatted only when something fails.
struct CallInfo {
  const char* op = "";
  AllreduceAlgorithm algorithm = AllreduceAlgorithm::kAuto;
  WireType wire = WireType::kFloat32;
  int64_t count = 0;  // floats (Allreduce) or bytes (Broadcast, Allgather)
};

// A peer value for requests that belong to a non-blocking MPI collective
// (MPI_Iallreduce, MPI_Ibarrier...) rather than one peer.
constexpr int kCollectivePeer = -1;

class CollectiveContext {
 public:
  // Takes ownership of `comm` (a duplicate); frees it unless MPI has been
  // finalized.
  explicit CollectiveContext(MPI_Comm comm);
  ~CollectiveContext();
  CollectiveContext(const CollectiveContext&) = delete;
  CollectiveContext& operator=(const CollectiveContext&) = delete;

  MPI_Comm comm() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }

  // Starts a call: numbers it (every rank numbers its calls alike) and sets
  // its deadline, POLIS_TIMEOUT_S from now.
  void BeginCall(const CallInfo& info);
  int64_t call_number() const { return seq_.load(std::memory_order_relaxed); }

  // Waits until the n requests complete: polls for POLIS_COMM_SPIN_US
  // (without yielding), then sleeps with back-off while
  // answering stall queries, until the call's deadline. On the deadline,
  // returns Timeout naming the peers of the open requests
  // (peers[i], sends[i]: reqs[i] is a send to / receive from peers[i], or
  // kCollectivePeer) and the ranks that have not entered this call.
  // In single-threaded mode (common/comm/wait.h): one MPI_Waitall.
  Status Wait(int n, MPI_Request* reqs, const int* peers, const bool* sends);
  Status WaitOne(MPI_Request* req, int peer, bool send) { return Wait(1, req, &peer, &send); }

  // After a failure: cancels the point-to-point requests that are still
  // open (sends[i]: reqs[i] is a send). Receives are cancelled and completed;
  // a send whose receiver never comes is freed and stays with MPI, which may
  // still read its buffer. A request of a non-blocking collective cannot be
  // cancelled: pass sends == nullptr and it is left to MPI.
  void Abandon(int n, MPI_Request* reqs, const bool* sends);

  // Buffers shared by the algorithms (one call at a time).
  ScratchBuffer& scratch() { return scratch_; }
  ScratchBuffer& slots() { return slots_; }

  // "Allreduce(ring, bf16, 1000 floats) call #3 on rank 0 of 3".
  std::string Describe() const;

  // For a context over a sub-communicator (the hierarchical algorithm's
  // host and cross-host groups): `scope` names the group in messages
  // ("inside host 1"), and ranks are named by their rank in the parent
  // communicator, parent_ranks[sub rank].
  void SetScope(std::string scope, std::vector<int> parent_ranks);
  // While this context waits it also answers the stall queries of `other`
  // (a rank waiting in one group still tells the other group's peers which
  // call it is in). `other` must outlive this context.
  void AlsoAnswerFor(CollectiveContext* other) { others_.push_back(other); }

  // Receives and answers stall queries that have arrived (non-blocking).
  // Thread-safe: a thread that finds another answering returns at once.
  Status AnswerStallQueries();

 private:
  // Answers this context's and the linked contexts' stall queries.
  Status AnswerAllStallQueries();
  int Name(int rank) const { return parent_ranks_.empty() ? rank : parent_ranks_[rank]; }
  // Asks every peer which call it is in, for a grace period; returns the
  // ranks that did not answer or are behind this call.
  std::vector<int> RanksNotInCall();
  Status TimeoutStatus(int n, MPI_Request* reqs, const int* peers, const bool* sends);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::atomic<int64_t> seq_{0};  // read by AnswerStallQueries on any thread
  std::mutex answering_;         // one probe-receive-reply at a time
  int64_t stall_query_ = 0;  // the buffer of outgoing stall queries (outlives them)
  CallInfo info_;
  Clock::time_point deadline_;
  Clock::duration spin_;
  ScratchBuffer scratch_;
  ScratchBuffer slots_;
  std::string scope_;
  std::vector<int> parent_ranks_;
  std::vector<CollectiveContext*> others_;
};

}  // namespace polis::comm::internal
