// In-process transport (common/comm/transport.h) for the roles' unit tests:
// the ranks of a job are threads of one process. Channels copy a message
// at the send (sends complete at once; receives complete when a matching
// message is there), keep MPI's matching rules (sender or kAnySource, tag,
// non-overtaking per sender and tag, a longer message than the buffer is an
// error) and are thread-safe. The workers' communicator sums in rank order
// (then rounds to the wire type), so every worker gets the same bits; its
// waits have the usual deadline (POLIS_TIMEOUT_S) and name the ranks that
// have not arrived.
#pragma once

#include <memory>
#include <vector>

#include "common/comm/transport.h"

namespace polis::comm {

class LocalFabric {
 public:
  // `size` ranks; `worker_ranks` (ascending) take part in all-reduce.
  LocalFabric(int size, std::vector<int> worker_ranks);
  ~LocalFabric();
  LocalFabric(const LocalFabric&) = delete;
  LocalFabric& operator=(const LocalFabric&) = delete;

  // Rank r's transport; owned by the fabric, which must outlive its use.
  Transport* transport(int rank);

  struct Network;
  struct Group;

 private:
  std::unique_ptr<Network> control_, data_;
  std::shared_ptr<Group> workers_;
  std::vector<std::unique_ptr<Transport>> transports_;
};

}  // namespace polis::comm
