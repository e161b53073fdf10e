#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

#include "common/env.h"

namespace polis {
namespace {

struct LogConfig {
  LogLevel level = LogLevel::kWarn;
  unsigned subsys_mask = ~0u;
  std::string identity;
};

unsigned SubsysBit(const std::string& name) {
  if (name == "COORD") return static_cast<unsigned>(Subsys::kCoord);
  if (name == "WORKER") return static_cast<unsigned>(Subsys::kWorker);
  if (name == "PS") return static_cast<unsigned>(Subsys::kPs);
  if (name == "NET") return static_cast<unsigned>(Subsys::kNet);
  if (name == "DATA") return static_cast<unsigned>(Subsys::kData);
  if (name == "REGISTRY") return static_cast<unsigned>(Subsys::kRegistry);
  if (name == "NN") return static_cast<unsigned>(Subsys::kNn);
  if (name == "LAUNCH") return static_cast<unsigned>(Subsys::kLaunch);
  if (name == "ALL") return ~0u;
  return 0;
}

const char* SubsysName(Subsys s) {
  switch (s) {
    case Subsys::kCoord: return "COORD";
    case Subsys::kWorker: return "WORKER";
    case Subsys::kPs: return "PS";
    case Subsys::kNet: return "NET";
    case Subsys::kData: return "DATA";
    case Subsys::kRegistry: return "REGISTRY";
    case Subsys::kNn: return "NN";
    case Subsys::kLaunch: return "LAUNCH";
  }
  return "?";
}

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kError: return "ERROR";
    case LogLevel::kWarn: return "WARN";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kTrace: return "TRACE";
  }
  return "?";
}

LogConfig& Config() {
  static LogConfig* config = [] {
    auto* c = new LogConfig;
    std::string level = env::DebugLevel();
    if (level == "TRACE") c->level = LogLevel::kTrace;
    else if (level == "INFO") c->level = LogLevel::kInfo;
    else if (level == "ERROR") c->level = LogLevel::kError;
    std::string subsys = env::DebugSubsys();
    if (!subsys.empty()) {
      c->subsys_mask = 0;
      std::stringstream ss(subsys);
      std::string item;
      while (std::getline(ss, item, ',')) c->subsys_mask |= SubsysBit(item);
    }
    char host[64] = "?";
    gethostname(host, sizeof(host) - 1);
    c->identity = fmt::format("{}:{}", host, getpid());
    return c;
  }();
  return *config;
}

}  // namespace

void SetLogIdentity(int rank, const std::string& role, const std::string& host_name) {
  char host[64] = "?";
  gethostname(host, sizeof(host) - 1);
  Config().identity = fmt::format("{}:{} [{} {}]", host_name.empty() ? host : host_name, getpid(), rank, role);
}

bool LogEnabled(LogLevel level, Subsys subsys) {
  const LogConfig& c = Config();
  if (level <= LogLevel::kWarn) return true;
  return level <= c.level && (c.subsys_mask & static_cast<unsigned>(subsys)) != 0;
}

void LogLine(LogLevel level, Subsys subsys, const std::string& message) {
  std::string line = fmt::format("{} {} {} {}\n", Config().identity, SubsysName(subsys),
                                 LevelName(level), message);
  std::fputs(line.c_str(), stderr);
}

}  // namespace polis
