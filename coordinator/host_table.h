// HostTable: the latest figures of every host of a job, as its ranks
// report them (proto::HostStats in Progress and ServerStats; the
// coordinator samples its own host), for /api/status's "hosts" array and
// the polis_host_* series on /metrics (docs/operations.md, "The cluster
// view").
//
// Several ranks on one host report the same host: the newest sample wins.
// Values from the wire are checked here, not trusted: a figure that is not
// finite or out of range is left out (null), never a reason to stop the job.
//
// Thread-safety: used by the coordinator's thread only.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/proto/control.pb.h"

namespace polis::coordinator {

class HostTable {
 public:
  using Clock = std::chrono::steady_clock;

  // `rank` on `host` sent `stats` at `now`.
  void Update(const std::string& host, int rank, const proto::HostStats& stats, Clock::time_point now);

  struct Rank {
    int rank = 0;
    std::string role;  // coordinator, server, worker
    std::string host;
  };
  // One entry per host that carries a rank of `ranks` (in the order the
  // hosts first appear there): {host, ranks: [{rank, role}], cpu_percent,
  // cpus, memory_used_bytes, memory_total_bytes, net_rx_bytes,
  // net_tx_bytes, net_rx_bytes_per_second, net_tx_bytes_per_second,
  // net_interfaces, gpus: [...], sampled_by_rank, sample_age_seconds};
  // the figures are null until a rank on that host has reported.
  nlohmann::json Json(const std::vector<Rank>& ranks, Clock::time_point now) const;

 private:
  struct Entry {
    int rank = 0;
    proto::HostStats stats;
    Clock::time_point at;
  };
  std::map<std::string, Entry> hosts_;
};

}  // namespace polis::coordinator
