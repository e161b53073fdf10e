// PsClient: a worker's side of key-range push/pull (ps-lite's small API).
//
// PushPull(step, samples, grads, params) sends each server its slice of the
// flat gradient buffer and receives the fresh slice of the parameters
// straight into the flat parameter buffer: raw MPI buffers, no copies, no
// protobuf. It returns a timestamp; Wait(ts) blocks (backing off, with a
// deadline that names the servers that have not answered). One outstanding
// round at a time; one thread.
#pragma once

#include <mpi.h>

#include <vector>

#include "common/comm/key_ranges.h"
#include "common/role.h"
#include "common/status.h"

namespace polis::comm {

class PsClient {
 public:
  // `ctrl`/`coordinator`: while waiting, a STOP from the coordinator ends the
  // wait with CANCELLED (the job is stopping).
  PsClient(MPI_Comm data, std::vector<int> server_ranks, std::vector<KeyRange> ranges,
           MPI_Comm ctrl = MPI_COMM_NULL, int coordinator = 0);
  // Starts one round. `grads` and `params` must stay valid until Wait.
  StatusOr<int64_t> PushPull(const PushHeader& header, const float* grads, float* params);
  // Completes the round; every server's answer must agree on the step and flags.
  Status Wait(int64_t ts, PullHeader* reply);

 private:
  MPI_Comm data_;
  MPI_Comm ctrl_;
  int coordinator_;
  std::vector<int> servers_;
  std::vector<KeyRange> ranges_;
  std::vector<PushHeader> push_;
  std::vector<PullHeader> pull_;
  std::vector<MPI_Request> reqs_;
  int64_t pending_ = -1;
};

}  // namespace polis::comm
