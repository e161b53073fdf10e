// The MPI implementation of Communicator (common/comm/communicator.h).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/comm/communicator.h"
#include "common/status.h"

namespace polis::comm {

// Duplicates `comm` (so its traffic never mixes with other messages; the
// call is collective over `comm`) and preallocates scratch for all-reduces
// of up to `max_count` floats: 4 bytes per float plus about 1 MiB, and up
// to 4 bytes per float more where the hierarchical algorithm may be picked
// (several hosts with several ranks on one, or POLIS_ALLREDUCE_ALGO=hier;
// elsewhere an explicit kHierarchical reserves it on first use). Reads
// POLIS_ALLREDUCE_ALGO (an unknown name is InvalidArgument).
//
// `host_of_rank[r]` names the host of rank r of `comm` (any int; equal ids
// share a host), from the job's placement; empty means one host. It must
// have comm's size and be the same on every rank (InvalidArgument on every
// rank otherwise). The hierarchical algorithm and kAuto's choice use it;
// MPI_COMM_TYPE_SHARED is not consulted for it, since emulated hosts (network
// namespaces) share one kernel.
StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator(
    MPI_Comm comm, int64_t max_count, const std::vector<int>& host_of_rank = {});

}  // namespace polis::comm
