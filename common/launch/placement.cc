#include "common/launch/placement.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>

#include "common/echo.h"

namespace polis::launch {
namespace {

constexpr int kMaxSlots = 4096;

// A host name or an IPv4 address: letters, digits, '.', '-', '_'.
bool ValidHostName(const std::string& host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') return false;
  return true;
}

// A whole number of slots in [1, kMaxSlots], or -1.
int ParseSlots(const std::string& text) {
  if (text.empty() || text.size() > 4 || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  const int n = std::stoi(text);
  return n >= 1 && n <= kMaxSlots ? n : -1;
}

Status RefuseDuplicates(const std::vector<HostSlots>& hosts, const std::string& where) {
  std::set<std::string> seen;
  for (const auto& h : hosts)
    if (!seen.insert(h.host).second)
      return InvalidArgument("{}: host '{}' is named twice (give its slots once)", where, h.host);
  return Status::Ok();
}

// One "HOST slots=N" line (already without its comment), or an error
// naming the file and line.
StatusOr<HostSlots> ParseHostfileLine(const std::string& line, const std::string& where) {
  std::istringstream words(line);
  std::string host, slots_word, extra;
  words >> host >> slots_word >> extra;
  const auto malformed = [&] {
    return InvalidArgument("{}: expected 'HOST slots=N' (N in 1..{}); got '{}'", where, kMaxSlots,
                           EchoValue(line));
  };
  if (!ValidHostName(host) || !extra.empty()) return malformed();
  HostSlots h{host, 1};
  if (!slots_word.empty()) {
    if (slots_word.rfind("slots=", 0) != 0) return malformed();
    h.slots = ParseSlots(slots_word.substr(6));
    if (h.slots < 0) return malformed();
  }
  return h;
}

}  // namespace

StatusOr<std::vector<HostSlots>> ParseHostList(const std::string& list) {
  std::vector<HostSlots> hosts;
  std::istringstream items(list);
  std::string item;
  while (std::getline(items, item, ',')) {
    const size_t colon = item.find(':');
    HostSlots h{item.substr(0, colon), 1};
    if (colon != std::string::npos) h.slots = ParseSlots(item.substr(colon + 1));
    if (!ValidHostName(h.host) || h.slots < 0)
      return InvalidArgument("--hosts: expected HOST:SLOTS,HOST:SLOTS,... (SLOTS in 1..{}); got '{}' in '{}'",
                             kMaxSlots, EchoValue(item), EchoValue(list));
    hosts.push_back(h);
  }
  if (hosts.empty() || list.back() == ',')
    return InvalidArgument("--hosts: expected HOST:SLOTS,HOST:SLOTS,...; got '{}'", EchoValue(list));
  POLIS_RETURN_IF_ERROR(RefuseDuplicates(hosts, "--hosts"));
  return hosts;
}

StatusOr<std::vector<HostSlots>> ParseHostfile(const std::string& text, const std::string& path) {
  std::vector<HostSlots> hosts;
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    line = line.substr(0, line.find('#'));
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    POLIS_ASSIGN_OR_RETURN(HostSlots h, ParseHostfileLine(line, fmt::format("{}:{}", path, number)));
    hosts.push_back(h);
  }
  if (hosts.empty()) return InvalidArgument("{}: no hosts (expected lines 'HOST slots=N')", path);
  POLIS_RETURN_IF_ERROR(RefuseDuplicates(hosts, path));
  return hosts;
}

std::string HostListString(const std::vector<HostSlots>& hosts) {
  std::string out;
  for (const auto& h : hosts) out += fmt::format("{}{}:{}", out.empty() ? "" : ",", h.host, h.slots);
  return out;
}

StatusOr<std::vector<PlacedRank>> Place(const std::vector<HostSlots>& hosts, int servers, int workers) {
  int total = 0;
  for (const auto& h : hosts) total += h.slots;
  const int needed = 1 + servers + workers;
  if (hosts.empty() || total < needed)
    return InvalidArgument("too few slots: 1 coordinator, {} server(s) and {} worker(s) need {}; the hosts give {}",
                           servers, workers, needed, total);
  std::vector<int> used(hosts.size(), 0);
  std::vector<PlacedRank> placed;
  const auto put = [&](const char* role, size_t host) {
    placed.push_back({static_cast<int>(placed.size()), role, hosts[host].host, used[host]++});
  };
  put("coordinator", 0);
  // Round-robin from the second host; a full host is skipped (a free one
  // always exists: there are enough slots in total).
  size_t next = hosts.size() > 1 ? 1 : 0;
  for (int s = 0; s < servers; ++s) {
    while (used[next] == hosts[next].slots) next = (next + 1) % hosts.size();
    put("server", next);
    next = (next + 1) % hosts.size();
  }
  size_t fill = 0;
  for (int w = 0; w < workers; ++w) {
    while (used[fill] == hosts[fill].slots) ++fill;
    put("worker", fill);
  }
  return placed;
}

std::string PlacementTable(const std::vector<PlacedRank>& placement) {
  size_t width = 4;
  for (const auto& p : placement) width = std::max(width, p.host.size());
  std::string out = fmt::format("{:>5}  {:<11}  {:<{}}  {}\n", "rank", "role", "host", width, "local_rank");
  for (const auto& p : placement)
    out += fmt::format("{:>5}  {:<11}  {:<{}}  {}\n", p.rank, p.role, p.host, width, p.local_rank);
  return out;
}

}  // namespace polis::launch
