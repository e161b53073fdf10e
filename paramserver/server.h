// Parameter server role: owns one key range of the flat parameter buffer and
// its optimizer state. BSP: each step it waits for every worker's pushed
// gradient slice, averages them by samples, applies the optimizer, and
// answers every worker with the fresh slice (push and pull are one round
// trip). Waits back off rather than spin. Runs on the calling thread.
#pragma once

#include "common/role.h"
#include "common/status.h"

namespace polis::paramserver {

Status RunServer(const RoleContext& ctx);

}  // namespace polis::paramserver
