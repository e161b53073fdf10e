// Diagnostics by environment, in the NCCL manner.
//
//   POLIS_DEBUG=WARN|INFO|TRACE         (default WARN)
//   POLIS_DEBUG_SUBSYS=COORD,WORKER,PS,NET,DATA,REGISTRY,NN   (default all)
//
// Each line is "host:pid [rank role] SUBSYS LEVEL message" on stderr.
// Thread-safe: one fprintf per line. The level check is one load, so a
// disabled TRACE line costs nothing on the hot path.
#pragma once

#include <fmt/format.h>

#include <string>

namespace polis {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kTrace = 3 };
enum class Subsys : unsigned { kCoord = 1, kWorker = 2, kPs = 4, kNet = 8, kData = 16,
                               kRegistry = 32, kNn = 64, kLaunch = 128 };

// Set once per process, after MPI is up: "[3 worker]".
// host_name: the rank's host from the placement (emulated hosts share one
// hostname); "" uses gethostname.
void SetLogIdentity(int rank, const std::string& role, const std::string& host_name = "");
bool LogEnabled(LogLevel level, Subsys subsys);
void LogLine(LogLevel level, Subsys subsys, const std::string& message);

}  // namespace polis

#define POLIS_LOG(level, subsys, ...)                                                  \
  do {                                                                                 \
    if (::polis::LogEnabled(::polis::LogLevel::level, ::polis::Subsys::subsys))        \
      ::polis::LogLine(::polis::LogLevel::level, ::polis::Subsys::subsys,             \
                       fmt::format(__VA_ARGS__));                                      \
  } while (0)
