#include "coordinator/host_metrics.h"

#include <fmt/format.h>

#include "coordinator/prometheus_family.h"

namespace polis::coordinator {

void AppendHostMetrics(const nlohmann::json& hosts, std::string* out) {
  if (!hosts.is_array()) return;
  struct HostMetric {
    const char* key;
    const char* name;
    const char* help;
  };
  static const HostMetric kHostMetrics[] = {
      {"cpu_percent", "polis_host_cpu_percent", "Busy share of the host's CPUs (all cores), 0..100."},
      {"cpus", "polis_host_cpus", "CPUs of the host (/proc/stat)."},
      {"memory_used_bytes", "polis_host_memory_used_bytes", "Memory in use on the host (MemTotal - MemAvailable)."},
      {"memory_total_bytes", "polis_host_memory_total_bytes", "Memory of the host (MemTotal)."},
      {"net_rx_bytes_per_second", "polis_host_network_receive_bytes_per_second",
       "Bytes per second the host received (all interfaces but lo)."},
      {"net_tx_bytes_per_second", "polis_host_network_transmit_bytes_per_second",
       "Bytes per second the host sent (all interfaces but lo)."},
      {"sample_age_seconds", "polis_host_sample_age_seconds", "Seconds since the host's figures were last reported."},
  };
  auto label_of = [](const nlohmann::json& h) -> std::string {
    auto it = h.find("host");
    if (it == h.end() || !it->is_string()) return "";
    return fmt::format("host=\"{}\"", PromLabelValue(it->get<std::string>()));
  };
  for (const auto& m : kHostMetrics) {
    PromFamily f(m.name, "gauge", m.help);
    for (const auto& h : hosts) {
      const std::string label = h.is_object() ? label_of(h) : "";
      auto it = label.empty() ? h.end() : h.find(m.key);
      if (!label.empty() && it != h.end() && it->is_number()) f.Add(label, it->get<double>());
    }
    f.AppendTo(out);
  }
  {
    PromFamily ranks("polis_host_ranks", "gauge", "Ranks of the job(s) the host carries.");
    for (const auto& h : hosts) {
      const std::string label = h.is_object() ? label_of(h) : "";
      if (!label.empty() && h.contains("ranks") && h["ranks"].is_array())
        ranks.Add(label, static_cast<double>(h["ranks"].size()));
    }
    ranks.AppendTo(out);
  }
  PromFamily util("polis_host_gpu_utilization_percent", "gauge", "GPU utilisation (NVML), 0..100.");
  PromFamily used("polis_host_gpu_memory_used_bytes", "gauge", "GPU memory in use (NVML).");
  PromFamily total("polis_host_gpu_memory_total_bytes", "gauge", "GPU memory (NVML).");
  for (const auto& h : hosts) {
    const std::string label = h.is_object() ? label_of(h) : "";
    if (label.empty() || !h.contains("gpus") || !h["gpus"].is_array()) continue;
    for (const auto& g : h["gpus"]) {
      if (!g.is_object() || !g.contains("index") || !g["index"].is_number_integer()) continue;
      const std::string gl = fmt::format("{},gpu=\"{}\"", label, g["index"].get<int64_t>());
      if (g.value("utilization_percent", nlohmann::json()).is_number()) util.Add(gl, g["utilization_percent"].get<double>());
      if (g.value("memory_used_bytes", nlohmann::json()).is_number()) used.Add(gl, g["memory_used_bytes"].get<double>());
      if (g.value("memory_total_bytes", nlohmann::json()).is_number()) total.Add(gl, g["memory_total_bytes"].get<double>());
    }
  }
  util.AppendTo(out);
  used.AppendTo(out);
  total.AppendTo(out);
}

}  // namespace polis::coordinator
