// NcclCommunicator: the NCCL implementation of Communicator
// (common/comm/communicator.h) for GPU workers, one GPU per rank.
//
// Pointers are DEVICE pointers: Allreduce, Broadcast and Allgather take
// buffers in the memory of this rank's GPU (e.g. CudaNetwork's flat
// gradient buffer), never host memory. Every collective runs on the
// communicator's own stream (a dedicated, high-priority, non-blocking
// stream), so it overlaps compute on other streams; WaitFor(event) orders
// the next collective after work on another stream (a CudaNetwork layer's
// layer_done_event) without a host synchronisation.
//
// The ncclUniqueId is made by rank 0 and broadcast over MPI (MPI_Bcast on a
// duplicate of the given communicator), so ranks are those of that
// communicator. NCCL is initialised non-blocking: every call, including
// initialisation, has a deadline (POLIS_TIMEOUT_S) and its waits poll
// ncclCommGetAsyncError and cudaStreamQuery with the shared back-off
// (POLIS_COMM_SPIN_US, POLIS_IDLE_MAX_US). On a deadline the communicator
// is aborted (ncclCommAbort) and the call returns Timeout; NCCL cannot say
// which rank is missing. After a Timeout or Remote error every later call is
// FailedPrecondition.
//
// Wire types: kBFloat16/kFloat16 convert fp32 -> 16 bits in a kernel,
// all-reduce the 16-bit values with ncclSum and convert back. Unlike the MPI
// communicator, NCCL adds the 16-bit values at every hop, so partial sums
// are rounded to the wire type on the way (docs/design/gpu.md, "NCCL").
// The algorithm options are ignored: NCCL chooses ring or tree itself.
//
// Thread-compatible: one thread calls it at a time.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <cstdint>
#include <memory>

#include "common/comm/communicator.h"
#include "common/status.h"

namespace polis::comm {

class NcclCommunicator : public Communicator {
 public:
  // The next collective's stream waits for `ready` (recorded on any stream
  // of this device) before it starts.
  virtual Status WaitFor(cudaEvent_t ready) = 0;
  // The same for a device event of this GPU (device::Event::native()).
  Status WaitFor(device::Event& ready) override { return WaitFor(static_cast<cudaEvent_t>(ready.native())); }
  device::Space space() const override { return device::Space::kDevice; }
  // The dedicated stream the collectives run on.
  virtual cudaStream_t stream() const = 0;
  virtual int device() const = 0;
};

// This rank's GPU: its rank among the ranks of `comm` on the same node
// (MPI_Comm_split_type SHARED), modulo the node's device count. Collective.
StatusOr<int> LocalDevice(MPI_Comm comm);

// Collective over `comm`. Scratch for 16-bit wires is preallocated for up to
// max_count floats (larger calls grow it once and log a warning).
StatusOr<std::unique_ptr<NcclCommunicator>> MakeNcclCommunicator(MPI_Comm comm, int device,
                                                                 int64_t max_count = 1 << 22);

}  // namespace polis::comm
