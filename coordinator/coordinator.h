// Coordinator role (rank 0): owns the epoch plan and hands shards to workers
// on request (dynamic assignment), gathers epoch reports and prints progress
// (loss, test accuracy, images/s, ETA), writes <run-dir>/metrics.jsonl, and
// at job end gathers the final parameters from the servers, publishes them
// to the registry, reloads the published artifact to verify it, and writes
// <run-dir>/result.json. With registry.url the artifact is written to
// <run-dir>/model.polis and uploaded to that polis-registry with a bearer
// token; a refused or failed upload fails the job (the file stays). Runs on the calling thread; waits back off.
#pragma once

#include "common/role.h"
#include "common/status.h"

namespace polis::coordinator {

struct CoordinatorOptions {
  bool progress_bar = false;  // redraw one line in place (a terminal)
  // HOST:PORT of the monitoring API (port 0: any free one); "" = none.
  std::string monitor_listen = "127.0.0.1:0";
  // TLS for the monitoring API (coordinator/monitor.h): PEM certificate and
  // key; with them, optionally a plain-HTTP port that refuses commands.
  std::string monitor_tls_cert;
  std::string monitor_tls_key;
  std::string monitor_plain_listen;
};

Status RunCoordinator(const RoleContext& ctx, const CoordinatorOptions& options);

}  // namespace polis::coordinator
