// Communicator: collectives (all-reduce, broadcast, all-gather, barrier) over
// a fixed group of ranks, for all-reduce training (STYLE.md habit 1: this is
// the collectives interface; key-range push/pull lives in PsClient).
//
// The MPI implementation (MakeMpiCommunicator, common/comm/mpi_communicator.h) offers six all-reduce
// algorithms (docs/design/allreduce.md):
//   kMpi                Open MPI's non-blocking MPI_Iallreduce (fp32 wire only;
//                       a 16-bit wire falls back to kRing)
//   kRing               reduce-scatter + all-gather over MPI_Isend/MPI_Irecv,
//                       segmented and pipelined: bandwidth-optimal
//   kRecursiveDoubling  log2(n) full exchanges (non-powers of two fold the
//                       extra ranks in first): latency-optimal, small messages
//   kRabenseifner       reduce-scatter by recursive halving + all-gather by
//                       recursive doubling (same fold): bandwidth-optimal in
//                       2 log2(n) steps instead of the ring's 2(n-1)
//   kDirect             every rank sends each block straight to its owner,
//                       which sums it and sends it straight to everyone:
//                       bandwidth-optimal in two handoffs, for one host
//   kHierarchical       reduce-scatter inside each host, all-reduce of each
//                       slice across hosts, all-gather inside the host:
//                       each host's link carries 2(H-1)/H of the buffer
//                       for H hosts, whatever the ranks per host
// kAuto picks one by Choose(): POLIS_ALLREDUCE_ALGO if set, else by topology
// and size.
//
// Thread-compatible: one thread calls it at a time (the worker's
// communication thread). If other threads call MPI too, MPI must be
// initialised with MPI_THREAD_SERIALIZED (their calls serialised with these)
// or MPI_THREAD_MULTIPLE.
//
// Deadlines: every call has one (POLIS_TIMEOUT_S from the call's start) and
// its waits back off (a short bounded poll, then sleeps, POLIS_COMM_SPIN_US and
// POLIS_IDLE_MAX_US) instead of spinning. A peer that never answers gives
// Timeout naming the ranks that have not entered the collective. After a
// Timeout or Remote error the communicator is unusable (later calls return
// FailedPrecondition): messages of the failed call may still be in flight.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/device/device.h"
#include "common/status.h"

namespace polis::comm {

// What travels on the wire; the reduction itself is always fp32.
enum class WireType { kFloat32, kBFloat16, kFloat16 };
enum class AllreduceAlgorithm {
  kAuto,
  kMpi,
  kRing,
  kRecursiveDoubling,
  kRabenseifner,
  kDirect,
  kHierarchical
};

// "auto", "mpi", "ring", "rd", "rabenseifner", "direct", "hier"; anything
// else is InvalidArgument listing those.
StatusOr<AllreduceAlgorithm> ParseAllreduceAlgorithm(const std::string& name);
// The inverse: "auto", "mpi", "ring", "rd", "rabenseifner", "direct", "hier".
const char* AllreduceAlgorithmName(AllreduceAlgorithm algorithm);
// "fp32", "bf16", "fp16".
const char* WireTypeName(WireType wire);
// Bytes per element on the wire: 4 or 2.
int WireBytes(WireType wire);

struct AllreduceOptions {
  // kAuto asks Choose(); anything else is used as given (env not consulted).
  AllreduceAlgorithm algorithm = AllreduceAlgorithm::kAuto;
  // kBFloat16/kFloat16: values are rounded (nearest-even) to the wire type
  // for sending and accumulated in fp32; every rank ends with the same bits,
  // and (for more than one rank) those are values of the wire type.
  WireType wire = WireType::kFloat32;
};

// Collectives over a fixed group of ranks. Thread-compatible: one thread
// calls it at a time (the worker's communication thread). Every call has a
// deadline (POLIS_TIMEOUT_S) and waits back off (no busy spin that steals the
// core from compute); a peer that never answers gives Timeout naming that
// peer's rank. All ranks must make the same calls in the same order with the
// same count/bytes/root/options (as with MPI collectives).
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sum of `count` floats across ranks. count may be 0. No
  // allocation per call: scratch is preallocated at construction for up to
  // max_count floats (larger calls grow it once and log a warning).
  virtual Status Allreduce(float* data, int64_t count, const AllreduceOptions& options) = 0;
  // Copies `bytes` bytes from `root`'s buffer into everyone's.
  virtual Status Broadcast(void* data, int64_t bytes, int root) = 0;
  // recv (size() * bytes_per_rank bytes) receives rank i's `send` at offset
  // i * bytes_per_rank. bytes_per_rank must fit in an int.
  virtual Status Allgather(const void* send, void* recv, int64_t bytes_per_rank) = 0;
  virtual Status Barrier() = 0;
  // Which algorithm kAuto picks for `count` floats (documented priority
  // list, thresholds by measurement; POLIS_ALLREDUCE_ALGO env var forces
  // one). Never returns kAuto; never kMpi for a 16-bit wire.
  virtual AllreduceAlgorithm Choose(int64_t count, WireType wire) const = 0;
  // Where the buffers given to it live: host memory (MPI), or the GPU's
  // (NCCL; common/comm/nccl_communicator.h).
  virtual device::Space space() const { return device::Space::kHost; }
  // The next collective starts only once `ready` is reached. A device
  // communicator orders its own stream after it; by default the host waits.
  virtual Status WaitFor(device::Event& ready) { return ready.Synchronize(); }
};

}  // namespace polis::comm
