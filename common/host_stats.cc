#include "common/host_stats.h"

#include <unistd.h>

#include <charconv>
#include <vector>

#include "common/fs.h"
#include "common/gpu_stats.h"

namespace polis {
namespace {

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

std::vector<std::string_view> Words(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

bool ToU64(std::string_view s, uint64_t* v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

StatusOr<CpuTimes> ParseProcStat(std::string_view text) {
  CpuTimes t;
  bool found = false;
  for (std::string_view line : Lines(text)) {
    if (line.starts_with("cpu ")) {
      // user nice system idle iowait irq softirq steal [guest guest_nice]:
      // guest time is already inside user and nice.
      const auto w = Words(line);
      uint64_t v[8] = {};
      if (w.size() < 5)
        return DataLoss("/proc/stat: the 'cpu' line has {} fields, expected at least 4 numbers", w.size());
      for (size_t i = 1; i < w.size() && i <= 8; ++i)
        if (!ToU64(w[i], &v[i - 1]))
          return DataLoss("/proc/stat: field {} of the 'cpu' line is '{}', not a number", i, w[i]);
      t.busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
      t.total = t.busy + v[3] + v[4];
      found = true;
    } else if (line.starts_with("cpu") && line.size() > 3 && line[3] >= '0' && line[3] <= '9') {
      ++t.cpus;
    }
  }
  if (!found) return DataLoss("/proc/stat has no 'cpu ' line");
  return t;
}

StatusOr<MemInfo> ParseMeminfo(std::string_view text) {
  MemInfo m;
  bool total = false, available = false;
  for (std::string_view line : Lines(text)) {
    const auto w = Words(line);
    if (w.size() < 2 || (w[0] != "MemTotal:" && w[0] != "MemAvailable:")) continue;
    uint64_t kib = 0;
    if (!ToU64(w[1], &kib) || (w.size() >= 3 && w[2] != "kB"))
      return DataLoss("/proc/meminfo: '{}' is not 'NAME: N kB'", line.substr(0, 80));
    (w[0] == "MemTotal:" ? m.total_bytes : m.available_bytes) = static_cast<int64_t>(kib * 1024);
    (w[0] == "MemTotal:" ? total : available) = true;
  }
  if (!total || !available) return DataLoss("/proc/meminfo lacks {}", total ? "MemAvailable" : "MemTotal");
  return m;
}

StatusOr<NetCounters> ParseNetDev(std::string_view text) {
  NetCounters all, lo;
  bool others = false;
  int line_no = 0;
  for (std::string_view line : Lines(text)) {
    ++line_no;
    const size_t colon = line.find(':');
    if (line_no <= 2 || line.find_first_not_of(" \t") == std::string_view::npos) continue;  // the two headings
    if (colon == std::string_view::npos)
      return DataLoss("/proc/net/dev line {}: no 'NAME:' before the counters", line_no);
    const auto name = Words(line.substr(0, colon));
    const auto w = Words(line.substr(colon + 1));
    uint64_t rx = 0, tx = 0;
    if (name.size() != 1 || w.size() < 16 || !ToU64(w[0], &rx) || !ToU64(w[8], &tx))
      return DataLoss("/proc/net/dev line {}: expected 'NAME: 16 counters'", line_no);
    NetCounters& into = name[0] == "lo" ? lo : all;
    if (name[0] != "lo") others = true;
    into.rx_bytes += static_cast<int64_t>(rx);
    into.tx_bytes += static_cast<int64_t>(tx);
    into.interfaces += (into.interfaces.empty() ? "" : ",") + std::string(name[0]);
  }
  return others ? all : lo;
}

HostSampler::HostSampler(std::string proc_root, std::chrono::milliseconds min_interval)
    : root_(std::move(proc_root)), min_interval_(min_interval), last_at_(Clock::now()) {
  if (auto text = ReadFile(root_ + "/stat"); text.ok())
    if (auto cpu = ParseProcStat(*text); cpu.ok()) last_cpu_ = *cpu;
  if (auto text = ReadFile(root_ + "/net/dev"); text.ok())
    if (auto net = ParseNetDev(*text); net.ok()) last_net_ = *net;
}

std::optional<proto::HostStats> HostSampler::Sample() {
  const auto now = Clock::now();
  if (now - last_at_ < min_interval_) return std::nullopt;
  const double dt = std::chrono::duration<double>(now - last_at_).count();
  last_at_ = now;
  proto::HostStats h;
  h.set_interval_seconds(dt);
  if (auto text = ReadFile(root_ + "/stat"); text.ok()) {
    if (auto cpu = ParseProcStat(*text); cpu.ok()) {
      h.set_cpus(cpu->cpus);
      if (last_cpu_ && cpu->total > last_cpu_->total && cpu->busy >= last_cpu_->busy)
        h.set_cpu_percent(100.0 * static_cast<double>(cpu->busy - last_cpu_->busy) /
                          static_cast<double>(cpu->total - last_cpu_->total));
      last_cpu_ = *cpu;
    }
  }
  if (auto text = ReadFile(root_ + "/meminfo"); text.ok()) {
    if (auto mem = ParseMeminfo(*text); mem.ok()) {
      h.set_memory_total_bytes(mem->total_bytes);
      h.set_memory_available_bytes(mem->available_bytes);
    }
  }
  if (auto text = ReadFile(root_ + "/net/dev"); text.ok()) {
    if (auto net = ParseNetDev(*text); net.ok()) {
      h.set_net_rx_bytes(net->rx_bytes);
      h.set_net_tx_bytes(net->tx_bytes);
      h.set_net_interfaces(net->interfaces);
      // Counters that went down (an interface removed) give no rate.
      if (last_net_ && dt > 0 && net->interfaces == last_net_->interfaces && net->rx_bytes >= last_net_->rx_bytes &&
          net->tx_bytes >= last_net_->tx_bytes) {
        h.set_net_rx_bytes_per_second(static_cast<double>(net->rx_bytes - last_net_->rx_bytes) / dt);
        h.set_net_tx_bytes_per_second(static_cast<double>(net->tx_bytes - last_net_->tx_bytes) / dt);
      }
      last_net_ = *net;
    }
  }
  for (const auto& gpu : SampleGpus()) *h.add_gpus() = gpu;
  return h;
}

}  // namespace polis
