// IDX files (the MNIST family's format): a 4-byte magic, big-endian uint32
// dims, then the row-major payload. Only unsigned-byte payloads (type 0x08)
// are accepted, which covers MNIST, Fashion-MNIST and EMNIST.
//
// Every refusal is a sentence naming the file, the byte offset, what was
// expected and what was found: these files come from outside the process.
// Thread-safe: free functions with no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace polis::data {

struct IdxArray {
  std::vector<int64_t> dims;  // e.g. {60000, 28, 28}
  std::vector<uint8_t> data;  // row-major, product(dims) bytes
};

// Reads an IDX file, gzip-compressed (all members, as gzip -d would) or raw.
// Checks the magic (00 00 08 n, n in 1..4), that each dim is > 0 and their
// product fits, and that the file holds exactly header + product(dims)
// bytes: a short file or trailing bytes are DataLoss with the offset where
// the data ends. ScanIdx reads the same bytes with the same checks.
StatusOr<IdxArray> ReadIdx(const std::string& path);

// Reads only the header (dims) with the same checks on magic and dims,
// inflating just enough of a gzip file; the payload size is not checked.
StatusOr<std::vector<int64_t>> ReadIdxDims(const std::string& path);

// What a job check needs to know of an IDX file without keeping it.
struct IdxScan {
  std::vector<int64_t> dims;
  uint8_t max_value = 0;   // the largest element (a label file's largest label)
  int64_t max_index = 0;   // the first element holding it
};

// Streams the whole file (inflating a gzip one, a megabyte at a time) with
// ReadIdx's checks: magic, dims, and the exact length, so a short file or
// trailing bytes are DataLoss naming the (uncompressed) byte offset where the
// data ends. A truncated or corrupt gzip stream names the uncompressed offset
// it reached.
StatusOr<IdxScan> ScanIdx(const std::string& path);

}  // namespace polis::data
