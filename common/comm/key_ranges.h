// Key ranges: how the flat parameter buffer is cut across parameter servers.
//
// Parameters are contiguous in the flat buffer, so cutting it into S
// contiguous ranges of equal bytes balances servers exactly: a large tensor
// is split across several servers and small ones are packed together (the
// MXNet rule, without its threshold). Boundaries are aligned to 16 floats
// (64 bytes) so server kernels vectorise; servers differ by at most 16 floats.
#pragma once

#include <cstdint>
#include <vector>

namespace polis::comm {

struct KeyRange {
  int64_t begin = 0;  // first float
  int64_t end = 0;    // one past the last float
  int64_t size() const { return end - begin; }
};

std::vector<KeyRange> PartitionByBytes(int64_t total_floats, int servers);

}  // namespace polis::comm
