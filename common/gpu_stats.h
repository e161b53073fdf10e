// SampleGpus: utilisation and memory of this host's GPUs through NVML, for
// HostSampler (common/host_stats.h).
//
// Only builds with POLIS_WITH_CUDA ask NVML, and they open libnvidia-ml.so.1
// with dlopen on the first call: a host without the driver library, or
// whose NVML does not initialise, simply has no GPU entries. CPU-only
// builds never touch NVML and always return an empty list.
//
// Thread-safety: may be called from any thread (NVML is initialised once,
// under std::call_once).
#pragma once

#include <vector>

#include "common/proto/control.pb.h"

namespace polis {

std::vector<proto::GpuStats> SampleGpus();

}  // namespace polis
