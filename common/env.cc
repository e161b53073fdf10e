#include "common/env.h"

#include <cstdlib>

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
int TimeoutSeconds() {
  static const int v = GetInt("POLIS_TIMEOUT_S", 300);
  return v;
}
std::string FashionMnistDir() {
  return GetString("POLIS_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist");
}

}  // namespace polis::env
