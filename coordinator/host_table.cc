#include "coordinator/host_table.h"

#include <cmath>

namespace polis::coordinator {
namespace {

using json = nlohmann::json;

// A checked figure: finite and within [0, hi], else null.
json Figure(bool has, double v, double hi = 1e18) {
  return has && std::isfinite(v) && v >= 0 && v <= hi ? json(v) : json(nullptr);
}
json Count(bool has, int64_t v) { return has && v >= 0 ? json(v) : json(nullptr); }
std::string Short(const std::string& s) { return s.substr(0, 256); }

}  // namespace

void HostTable::Update(const std::string& host, int rank, const proto::HostStats& stats, Clock::time_point now) {
  Entry& e = hosts_[host];
  e.rank = rank;
  e.stats = stats;
  e.at = now;
}

json HostTable::Json(const std::vector<Rank>& ranks, Clock::time_point now) const {
  std::vector<std::string> order;
  std::map<std::string, json> rank_lists;
  for (const auto& r : ranks) {
    if (!rank_lists.count(r.host)) order.push_back(r.host), rank_lists[r.host] = json::array();
    rank_lists[r.host].push_back({{"rank", r.rank}, {"role", r.role}});
  }
  json out = json::array();
  for (const auto& host : order) {
    json h = {{"host", host}, {"ranks", rank_lists[host]}};
    auto it = hosts_.find(host);
    if (it == hosts_.end()) {
      for (const char* k : {"cpu_percent", "cpus", "memory_used_bytes", "memory_total_bytes", "net_rx_bytes",
                            "net_tx_bytes", "net_rx_bytes_per_second", "net_tx_bytes_per_second", "net_interfaces",
                            "sampled_by_rank", "sample_age_seconds"})
        h[k] = nullptr;
      h["gpus"] = json::array();
      out.push_back(std::move(h));
      continue;
    }
    const proto::HostStats& s = it->second.stats;
    const bool mem = s.has_memory_total_bytes() && s.has_memory_available_bytes() && s.memory_total_bytes() > 0 &&
                     s.memory_available_bytes() >= 0 && s.memory_available_bytes() <= s.memory_total_bytes();
    h["cpu_percent"] = Figure(s.has_cpu_percent(), s.cpu_percent(), 100);
    h["cpus"] = Count(s.has_cpus(), s.cpus());
    h["memory_used_bytes"] = mem ? json(s.memory_total_bytes() - s.memory_available_bytes()) : json(nullptr);
    h["memory_total_bytes"] = mem ? json(s.memory_total_bytes()) : json(nullptr);
    h["net_rx_bytes"] = Count(s.has_net_rx_bytes(), s.net_rx_bytes());
    h["net_tx_bytes"] = Count(s.has_net_tx_bytes(), s.net_tx_bytes());
    h["net_rx_bytes_per_second"] = Figure(s.has_net_rx_bytes_per_second(), s.net_rx_bytes_per_second());
    h["net_tx_bytes_per_second"] = Figure(s.has_net_tx_bytes_per_second(), s.net_tx_bytes_per_second());
    h["net_interfaces"] = s.has_net_interfaces() ? json(Short(s.net_interfaces())) : json(nullptr);
    json gpus = json::array();
    for (int i = 0; i < s.gpus_size() && i < 64; ++i) {
      const auto& g = s.gpus(i);
      gpus.push_back({{"index", g.index()}, {"name", Short(g.name())},
                      {"utilization_percent", Figure(g.has_utilization_percent(), g.utilization_percent(), 100)},
                      {"memory_used_bytes", Count(g.has_memory_used_bytes(), g.memory_used_bytes())},
                      {"memory_total_bytes", Count(g.has_memory_total_bytes(), g.memory_total_bytes())}});
    }
    h["gpus"] = std::move(gpus);
    h["sampled_by_rank"] = it->second.rank;
    h["sample_age_seconds"] = std::chrono::duration<double>(now - it->second.at).count();
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace polis::coordinator
