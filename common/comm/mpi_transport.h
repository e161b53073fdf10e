// The MPI transport (common/comm/transport.h): channels over duplicates of
// an MPI communicator, and the workers' all-reduce communicator. Built by
// polis-train once MPI is initialised; everything it returns must be gone
// before MPI_Finalize.
#pragma once

#include <mpi.h>

#include <memory>

#include "common/comm/channel.h"
#include "common/comm/transport.h"

namespace polis::comm {

// Point-to-point messages on `comm` (not owned; its error handler must
// return errors: MPI_ERRORS_RETURN). Bytes travel as MPI_BYTE.
std::unique_ptr<Channel> MakeMpiChannel(MPI_Comm comm);

// Collective over `world`: duplicates it twice (control and data, with
// MPI_ERRORS_RETURN) and splits off the ranks for which `is_worker` holds.
StatusOr<std::unique_ptr<Transport>> MakeMpiTransport(MPI_Comm world, bool is_worker);

// The workers' MPI communicator of an MPI transport (for a device
// communicator built over it, e.g. NCCL's); FailedPrecondition for another
// transport or a rank that is not a worker.
StatusOr<MPI_Comm> WorkersMpiComm(Transport& transport);

}  // namespace polis::comm
