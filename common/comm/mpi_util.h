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

#define POLIS_MPI_CHECK(expr)                                                        \
  do {                                                                               \
    int _polis_rc = (expr);                                                          \
    if (_polis_rc != MPI_SUCCESS)                                                    \
      return ::polis::comm::MpiStatus(_polis_rc, #expr, __FILE__, __LINE__);         \
  } while (0)

}  // namespace polis::comm
