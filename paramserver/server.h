// Parameter server role: owns one key range of the flat parameter buffer and
// its optimizer state, and answers workers' push/pull rounds.
//
// Consistency (job sync.consistency):
//  - BSP: a step waits for every active worker's gradient, averages them by
//    samples, applies one optimizer update and answers everyone;
//  - ASP: each push is applied as it arrives and answered at once;
//  - SSP(s): like ASP, but the answer to a worker whose clock (pushes so
//    far) is more than s ahead of the slowest active worker's is held until
//    the slowest catches up. The largest gap seen at an answer is reported
//    to the coordinator (ServerStats) so tests can check the bound.
// A worker with no data left sends an epoch-end push; its answer is held
// until every worker has finished the epoch, so all evaluate the same
// parameters.
//
// Checkpoints: every training.checkpoint_every_steps updates, at epoch ends,
// and when the coordinator asks, the server stops answering until every
// active worker waits on it (a cut that every server reaches at the same
// set of applied pushes), writes its shard, reports it, and resumes.
// Waits back off rather than spin. Runs on the calling thread.
#pragma once

#include "common/role.h"
#include "common/status.h"

namespace polis::paramserver {

Status RunServer(const RoleContext& ctx);

}  // namespace polis::paramserver
