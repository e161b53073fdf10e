// HostSampler: the figures of the host a rank runs on (CPU busy share,
// memory, network bytes in/out, GPUs), read from /proc by the rank itself
// and sent with its heartbeat (proto::HostStats in Progress and
// ServerStats), so the coordinator can show every host of a job without an
// agent to install (docs/operations.md, "The cluster view").
//
// Sources:
//  - CPU: the first ("cpu ") line of /proc/stat; busy = all jiffies but
//    idle and iowait; the share is over the time since the previous sample.
//  - Memory: MemTotal and MemAvailable of /proc/meminfo.
//  - Network: /proc/net/dev of the rank's network namespace, summed over
//    every interface but lo; lo counts only when it is the only one (a host
//    that talks to nobody else). Emulated hosts (network namespaces) see
//    their own links.
//  - GPUs: NVML (libnvidia-ml.so.1, opened with dlopen at run time) in
//    builds with POLIS_WITH_CUDA when the library and a device are there;
//    otherwise no GPU entry (common/gpu_stats.h).
//
// The parsers are pure functions of the file text, for tests. A file that
// cannot be read or parsed leaves its fields out; sampling never fails a job.
//
// Thread-safety: a HostSampler is used by one thread; the parsers are
// stateless.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/proto/control.pb.h"
#include "common/status.h"

namespace polis {

struct CpuTimes {
  uint64_t busy = 0;   // user+nice+system+irq+softirq+steal jiffies
  uint64_t total = 0;  // busy + idle + iowait
  int cpus = 0;        // "cpuN" lines
};
// DataLoss naming the line when the "cpu " line is missing or malformed.
StatusOr<CpuTimes> ParseProcStat(std::string_view text);

struct MemInfo {
  int64_t total_bytes = 0;
  int64_t available_bytes = 0;
};
// DataLoss when MemTotal or MemAvailable is missing or malformed.
StatusOr<MemInfo> ParseMeminfo(std::string_view text);

struct NetCounters {
  int64_t rx_bytes = 0;
  int64_t tx_bytes = 0;
  std::string interfaces;  // comma-separated, in file order
};
// Sums every interface but lo (lo alone when it is the only one). DataLoss
// naming the line when one is malformed.
StatusOr<NetCounters> ParseNetDev(std::string_view text);

class HostSampler {
 public:
  // `proc_root`: where stat, meminfo and net/dev are read ("/proc"; tests
  // give a directory of fixture files). Takes the first CPU and network
  // reading, so the first Sample() has rates.
  explicit HostSampler(std::string proc_root = "/proc",
                       std::chrono::milliseconds min_interval = std::chrono::milliseconds(1000));

  // A new sample when min_interval has passed since the previous one (or
  // since construction), else nullopt: cheap to call on every heartbeat.
  std::optional<proto::HostStats> Sample();

 private:
  using Clock = std::chrono::steady_clock;
  std::string root_;
  std::chrono::milliseconds min_interval_;
  Clock::time_point last_at_;
  std::optional<CpuTimes> last_cpu_;
  std::optional<NetCounters> last_net_;
};

}  // namespace polis
