// The polis_host_* series of a "hosts" array (HostTable::Json's shape:
// /api/status of a job, /api/cluster of `polisctl cluster --serve`), one
// sample per host labelled host="NAME" (GPUs also gpu="INDEX"). Figures
// that are null are left out.
//
// Values only; no shared state.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace polis::coordinator {

// Appends the families (HELP and TYPE lines included) to `out`.
void AppendHostMetrics(const nlohmann::json& hosts, std::string* out);

}  // namespace polis::coordinator
