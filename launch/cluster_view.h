// The cluster view behind `polisctl cluster` and its page (docs/operations.md,
// "The cluster view"): the jobs that are running or recently ended and the
// hosts that carry their ranks, with each host's figures.
//
// Jobs come from the jobs directory, where launch/polis-run writes one
// record per run (POLIS_JOBS_DIR, default ~/.polis/jobs), and from Slurm's
// `squeue --me` when squeue is installed. Each running job's coordinator is
// asked for /api/status (its "hosts" array carries the figures every rank
// samples from /proc: common/host_stats.h). A record whose launcher is gone
// without an end state is shown as lost, never as running; a coordinator
// that does not answer is shown as unreachable with one reason.
//
// BuildCluster is a function of the records and of what the Probes answer,
// so tests give it fixtures; DefaultProbes() reaches the real processes,
// coordinators and squeue.
//
// Thread-safety: stateless functions; the Probes are called from the
// calling thread.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/status.h"

namespace polis::ctl {

// $POLIS_JOBS_DIR, else $HOME/.polis/jobs.
std::string DefaultJobsDir();

struct JobsDir {
  std::vector<nlohmann::json> records;  // each with "record_path" added
  std::vector<std::string> problems;    // one line per unreadable record
};
// Every *.json record of `dir` (a missing directory holds none).
JobsDir ReadJobsDir(const std::string& dir);

// One line of `squeue --me -h -o "%i|%T|%M|%D|%N|%j"` (kSqueueFormat).
struct SqueueJob {
  std::string id, state, elapsed, nodelist, name;
  int nodes = 0;
};
extern const char kSqueueFormat[];
// DataLoss naming the line when one does not have the six fields.
StatusOr<std::vector<SqueueJob>> ParseSqueue(std::string_view text);

struct Probes {
  // Is process `pid` of this host alive (and still polis-run)?
  std::function<bool(int pid)> launcher_alive;
  // GET /api/status of the coordinator at `address` (http[s]://HOST:PORT).
  std::function<StatusOr<nlohmann::json>(const std::string& address)> status;
  // squeue's output in kSqueueFormat; NotFound when squeue is not installed.
  std::function<StatusOr<std::string>()> squeue;
  std::string this_host;  // gethostname
};
// The real ones; `timeout_s` bounds each coordinator's and squeue's answer.
// An https:// coordinator is verified against ca_file's CAs ("" = the system's).
Probes DefaultProbes(double timeout_s, const std::string& ca_file = "");

struct ClusterOptions {
  std::string jobs_dir;
  double recent_hours = 24;  // ended jobs are listed this long after their end
  bool squeue = true;
};

// {"jobs": [...], "hosts": [...], "problems": [...], "jobs_dir", "slurm",
// "generated_at"}; the fields of each are in docs/operations.md.
nlohmann::json BuildCluster(const ClusterOptions& o, const Probes& probes);

// The two tables (jobs, then hosts) and the reasons, as printed.
std::vector<std::string> ClusterTables(const nlohmann::json& cluster);

// `polisctl cluster`: adds the command to `app` and runs it.
struct ClusterCtlOptions {
  ClusterOptions cluster;
  std::string serve;    // HOST:PORT: serve the page and /api/cluster
  double interval_s = 2;
  std::string dashboard_dir;  // "" = the built-in one
  std::string ca_file;        // https coordinators: the CAs to trust (polisctl --cacert, POLIS_CA_FILE)
};
CLI::App* AddClusterCommand(CLI::App& app, ClusterCtlOptions* o);
int RunCluster(const ClusterCtlOptions& o, bool json, double timeout_s, const volatile bool* stop);

}  // namespace polis::ctl
