#include "common/env.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

namespace polis::env {
namespace {

std::string GetString(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::string(v) : std::string(fallback);
}

int GetInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long parsed = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || parsed < 0) return fallback;
  return static_cast<int>(parsed);
}

}  // namespace

std::string DebugLevel() { return GetString("POLIS_DEBUG", "WARN"); }
std::string DebugSubsys() { return GetString("POLIS_DEBUG_SUBSYS", ""); }
int IdleMaxMicros() {
  static const int v = GetInt("POLIS_IDLE_MAX_US", 200);
  return v;
}
int HeartbeatTimeoutSeconds() {
  static const int v = std::max(1, GetInt("POLIS_HEARTBEAT_TIMEOUT_S", 60));
  return v;
}
int StallWarnSeconds() {
  static const int v = GetInt("POLIS_STALL_WARN_S", 60);
  return v;
}

int TimeoutSeconds() {
  static const int v = GetInt("POLIS_TIMEOUT_S", 300);
  return v;
}
std::string FashionMnistDir() {
  return GetString("POLIS_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist");
}

// ---- Collectives ----
std::string AllreduceAlgo() { return GetString("POLIS_ALLREDUCE_ALGO", ""); }
int AllreduceRdMaxKiB() { return GetInt("POLIS_ALLREDUCE_RD_MAX_KB", -1); }
int AllreduceHierMinKiB() { return GetInt("POLIS_ALLREDUCE_HIER_MIN_KB", -1); }
int AllreducePieces() {
  static const int v = GetInt("POLIS_ALLREDUCE_PIECES", -1);
  return v > 0 ? std::min(v, 64) : -1;
}
int AllreduceSegmentKiB() {
  const int v = GetInt("POLIS_ALLREDUCE_SEGMENT_KB", 128);
  return v > 0 ? std::min(v, 65536) : 128;
}
int CommSpinMicros() { return GetInt("POLIS_COMM_SPIN_US", 50); }

namespace {
std::pair<int, int> SlowWorker() {
  const char* v = std::getenv("POLIS_TEST_SLOW_WORKER");
  int w = -1, ms = 0;
  if (v && std::sscanf(v, "%d:%d", &w, &ms) == 2) return {w, ms};
  return {-1, 0};
}
}  // namespace

std::string MonitorToken() { return GetString("POLIS_MONITOR_TOKEN", ""); }
std::string RegistryToken() { return GetString("POLIS_REGISTRY_TOKEN", ""); }
int RestartCount() { return std::max(0, GetInt("POLIS_RESTART_COUNT", 0)); }
std::string RestartCause() { return GetString("POLIS_RESTART_CAUSE", ""); }
std::string JobsDir() { return GetString("POLIS_JOBS_DIR", ""); }

int TestSlowWorkerIndex() { return SlowWorker().first; }
int TestSlowWorkerMillis() { return SlowWorker().second; }
std::string TestSampleLogDir() { return GetString("POLIS_TEST_SAMPLE_LOG", ""); }
std::pair<std::string, int64_t> TestPushCapture() {
  static const std::pair<std::string, int64_t> v = [] {
    const std::string s = GetString("POLIS_TEST_PUSH_CAPTURE", "");
    const size_t colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) return std::pair<std::string, int64_t>{"", -1};
    char* end = nullptr;
    const long long step = std::strtoll(s.c_str() + colon + 1, &end, 10);
    if (end == s.c_str() + colon + 1 || *end != '\0' || step < 0) return std::pair<std::string, int64_t>{"", -1};
    return std::pair<std::string, int64_t>{s.substr(0, colon), step};
  }();
  return v;
}

}  // namespace polis::env
