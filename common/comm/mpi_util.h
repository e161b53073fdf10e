// MPI at the boundary: every MPI call goes through POLIS_MPI_CHECK, which
// turns a failure into a Status. Only common/ and launch/ include this (and
// <mpi.h>); the roles talk through common/comm/transport.h.
#pragma once

#include <mpi.h>

#include "common/comm/channel.h"
#include "common/comm/wait.h"
#include "common/status.h"

namespace polis::comm {

Status MpiStatus(int rc, const char* expr, const char* file, int line);

// Open MPI settings Polis' collectives are measured with, put in this
// process's environment before MPI_Init (which reads OMPI_MCA_* there);
// each only where the user has not set it (mpirun --mca and -x reach the
// process the same way, so theirs win). Today: TCP messages up to 256 KiB
// go eagerly (btl_tcp_eager_limit, btl_tcp_rndv_eager_limit and
// btl_tcp_max_send_size; Open MPI's default is 64 KiB). The ring's 128 KiB
// segments then need no rendezvous handshake, which otherwise waits for the
// receiver's next poll: on the emulated 1 Gbit/s links a 2-host ring went
// from 0.61-0.77x the link rate to 0.96x (docs/design/allreduce.md).
void SetOpenMpiDefaults();

#define POLIS_MPI_CHECK(expr)                                                        \
  do {                                                                               \
    int _polis_rc = (expr);                                                          \
    if (_polis_rc != MPI_SUCCESS)                                                    \
      return ::polis::comm::MpiStatus(_polis_rc, #expr, __FILE__, __LINE__);         \
  } while (0)

}  // namespace polis::comm
