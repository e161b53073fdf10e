// Where each rank of a multi-host job runs: the hosts a user names (an Open
// MPI hostfile or a --hosts list), parsed and checked, and the placement of
// the coordinator, the parameter servers and the workers on them
// (docs/design/multi-host.md).
//
// Placement rules: rank 0 (the coordinator) on the first host; the servers
// (ranks 1..S) round-robin over the hosts, starting at the second, skipping
// full hosts, so no host gets a second server while one with a free slot has
// none; the workers (ranks S+1..) fill the remaining slots in host order.
//
// Pure functions, no I/O (the hostfile's text is passed in): thread-safe.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace polis::launch {

struct HostSlots {
  std::string host;  // a name or an address, as the user wrote it
  int slots = 1;
};

struct PlacedRank {
  int rank = 0;
  std::string role;  // "coordinator", "server" or "worker"
  std::string host;
  int local_rank = 0;  // its index among the ranks on the same host
};

// "h1:2,h2:2" (":N" may be left out: 1 slot). A host named twice is refused.
StatusOr<std::vector<HostSlots>> ParseHostList(const std::string& list);

// Open MPI hostfile syntax, one host a line: "HOST [slots=N]"; "#" starts a
// comment; blank lines are skipped. `path` only names the file in errors
// ("FILE:LINE: ..."). A host named twice is refused.
StatusOr<std::vector<HostSlots>> ParseHostfile(const std::string& text, const std::string& path);

// "h1:2,h2:2": the form ParseHostList reads back.
std::string HostListString(const std::vector<HostSlots>& hosts);

// One coordinator, `servers` servers and `workers` workers on `hosts`, by
// rank. Too few slots is InvalidArgument naming how many are needed.
StatusOr<std::vector<PlacedRank>> Place(const std::vector<HostSlots>& hosts, int servers, int workers);

// The table polis-run prints: a header line, then one line per rank.
std::string PlacementTable(const std::vector<PlacedRank>& placement);

}  // namespace polis::launch
