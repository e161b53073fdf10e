// Worker role: reads its samples directly from the dataset files, runs
// forward and backward on mini-batches of shards it asks the coordinator
// for, and synchronises with the parameter servers by one push/pull round
// per step (BSP). At each epoch end it evaluates its slice of the test set
// and reports to the coordinator. Runs on the calling thread.
#pragma once

#include "common/role.h"
#include "common/status.h"

namespace polis::worker {

Status RunWorker(const RoleContext& ctx);

}  // namespace polis::worker
