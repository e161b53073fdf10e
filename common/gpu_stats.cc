#include "common/gpu_stats.h"

#include "polis_config.h"

#if POLIS_WITH_CUDA
#include <dlfcn.h>

#include <mutex>
#endif

namespace polis {

#if POLIS_WITH_CUDA
namespace {

// The few NVML entry points used, declared here (their C ABI is stable) so
// that no NVML header or link-time library is needed.
using nvmlDevice_t = struct nvmlDevice_st*;
struct NvmlUtilization {
  unsigned int gpu, memory;
};
struct NvmlMemory {
  unsigned long long total, free, used;
};
struct Nvml {
  int (*device_count)(unsigned int*) = nullptr;
  int (*handle_by_index)(unsigned int, nvmlDevice_t*) = nullptr;
  int (*utilization)(nvmlDevice_t, NvmlUtilization*) = nullptr;
  int (*memory)(nvmlDevice_t, NvmlMemory*) = nullptr;
  int (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  bool ok = false;
};

const Nvml& LoadNvml() {
  static Nvml nvml;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    auto init = reinterpret_cast<int (*)()>(dlsym(lib, "nvmlInit_v2"));
    nvml.device_count = reinterpret_cast<int (*)(unsigned int*)>(dlsym(lib, "nvmlDeviceGetCount_v2"));
    nvml.handle_by_index =
        reinterpret_cast<int (*)(unsigned int, nvmlDevice_t*)>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
    nvml.utilization =
        reinterpret_cast<int (*)(nvmlDevice_t, NvmlUtilization*)>(dlsym(lib, "nvmlDeviceGetUtilizationRates"));
    nvml.memory = reinterpret_cast<int (*)(nvmlDevice_t, NvmlMemory*)>(dlsym(lib, "nvmlDeviceGetMemoryInfo"));
    nvml.name = reinterpret_cast<int (*)(nvmlDevice_t, char*, unsigned int)>(dlsym(lib, "nvmlDeviceGetName"));
    nvml.ok = init && nvml.device_count && nvml.handle_by_index && nvml.utilization && nvml.memory &&
              init() == 0;  // NVML_SUCCESS
  });
  return nvml;
}

}  // namespace

std::vector<proto::GpuStats> SampleGpus() {
  std::vector<proto::GpuStats> out;
  const Nvml& nvml = LoadNvml();
  unsigned int count = 0;
  if (!nvml.ok || nvml.device_count(&count) != 0) return out;
  for (unsigned int i = 0; i < count && i < 64; ++i) {
    nvmlDevice_t dev = nullptr;
    if (nvml.handle_by_index(i, &dev) != 0) continue;
    proto::GpuStats g;
    g.set_index(static_cast<int>(i));
    char name[96] = "";
    if (nvml.name && nvml.name(dev, name, sizeof(name)) == 0) g.set_name(name);
    NvmlUtilization u{};
    if (nvml.utilization(dev, &u) == 0) g.set_utilization_percent(u.gpu);
    NvmlMemory m{};
    if (nvml.memory(dev, &m) == 0) {
      g.set_memory_used_bytes(static_cast<int64_t>(m.used));
      g.set_memory_total_bytes(static_cast<int64_t>(m.total));
    }
    out.push_back(std::move(g));
  }
  return out;
}
#else
std::vector<proto::GpuStats> SampleGpus() { return {}; }
#endif

}  // namespace polis
