// Transport: what a rank of a training job talks through — a control
// channel (ControlMessages, never queued behind tensors), a data channel
// (raw tensors: parameter-server pushes and pulls, checkpoint bytes, final
// parameters) and, for all-reduce training, collectives over the workers.
// Topology (which rank is on which host) comes with it.
//
// polis-train builds the MPI one (common/comm/mpi_transport.h); the roles'
// unit tests build in-process ones (common/comm/local_transport.h). No role
// includes <mpi.h>.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/comm/channel.h"
#include "common/comm/communicator.h"
#include "common/status.h"

namespace polis::comm {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual Channel* control() = 0;
  virtual Channel* data() = 0;
  // Collective over the workers (every worker calls it, once): all-reduce
  // with scratch for up to `max_count` floats. `host_of_rank[i]` names the
  // host of the i-th worker (equal ids share a host; empty: one host).
  // FailedPrecondition on a rank that is not a worker.
  virtual StatusOr<std::unique_ptr<Communicator>> WorkersCommunicator(int64_t max_count,
                                                                      const std::vector<int>& host_of_rank) = 0;
  // This worker's index among the workers on its host (the GPU it takes;
  // the coordinator and servers on the host are not counted); -1 when not
  // known or not a worker. May be collective over the workers: every
  // worker calls it, or none.
  virtual int LocalWorkerIndex() { return -1; }
  // Whether one thread may use the control and data channels while another
  // runs a collective of the workers' communicator (MPI: initialised with
  // MPI_THREAD_MULTIPLE).
  virtual bool ConcurrentCalls() const { return true; }
};

}  // namespace polis::comm
