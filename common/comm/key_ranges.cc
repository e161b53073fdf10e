#include "common/comm/key_ranges.h"

#include <algorithm>

#include "common/status.h"

namespace polis::comm {

std::vector<KeyRange> PartitionByBytes(int64_t total, int servers) {
  POLIS_ENFORCE_GE(servers, 1);
  POLIS_ENFORCE_GE(total, 0);
  constexpr int64_t kAlign = 16;
  std::vector<KeyRange> out(servers);
  int64_t begin = 0;
  for (int s = 0; s < servers; ++s) {
    int64_t ideal = total * (s + 1) / servers;
    int64_t end = s + 1 == servers ? total : std::min(total, (ideal + kAlign / 2) / kAlign * kAlign);
    end = std::max(end, begin);
    out[s] = {begin, end};
    begin = end;
  }
  return out;
}

}  // namespace polis::comm
