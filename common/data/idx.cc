#include "common/data/idx.h"

#include <fmt/ranges.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>

#include "common/fs.h"

namespace polis::data {
namespace {

constexpr size_t kMagicBytes = 4;
constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr int kMaxDims = 4;
constexpr size_t kChunkBytes = size_t{1} << 20;  // inflated per read

std::string Hex(const uint8_t* bytes, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += fmt::format("{}{:02x}", i ? " " : "", bytes[i]);
  return out;
}

std::string DimsString(const std::vector<int64_t>& dims) {
  return fmt::format("[{}]", fmt::join(dims, ", "));
}

// Returns the number of dims the magic announces.
StatusOr<int> ParseMagic(const std::string& path, const uint8_t* magic) {
  if (magic[0] != 0 || magic[1] != 0) {
    return DataLoss("'{}': not an IDX file: at offset 0 expected bytes 00 00 08 0n, found {}",
                    path, Hex(magic, kMagicBytes));
  }
  if (magic[2] != kTypeUnsignedByte) {
    // 09 0b 0c 0d 0e are real IDX types (int8, int16, int32, float32, float64).
    return InvalidArgument(
        "'{}': IDX element type at offset 2 is 0x{:02x}; only unsigned byte (0x08) is supported "
        "(magic at offset 0: expected 00 00 08 0n, found {})",
        path, magic[2], Hex(magic, kMagicBytes));
  }
  if (magic[3] < 1 || magic[3] > kMaxDims) {
    return InvalidArgument(
        "'{}': IDX dim count at offset 3 is {}; expected 1..{} (magic at offset 0: found {})", path,
        magic[3], kMaxDims, Hex(magic, kMagicBytes));
  }
  return static_cast<int>(magic[3]);
}

// Decodes the big-endian dims that follow the magic and refuses zero dims and
// products that would overflow (a hostile header must not drive a huge resize).
StatusOr<std::vector<int64_t>> ParseDims(const std::string& path, const uint8_t* raw, int ndim) {
  std::vector<int64_t> dims(ndim);
  int64_t product = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* p = raw + 4 * d;
    uint32_t v = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    size_t offset = kMagicBytes + 4 * static_cast<size_t>(d);
    if (v == 0) {
      return DataLoss("'{}': IDX dim {} (byte offset {}) is 0; every dim must be > 0", path, d,
                      offset);
    }
    dims[d] = v;
    if (__builtin_mul_overflow(product, dims[d], &product) ||
        product > std::numeric_limits<int64_t>::max() / 2) {
      return InvalidArgument("'{}': IDX dims {} (up to byte offset {}) overflow the element count",
                             path, DimsString(std::vector<int64_t>(dims.begin(), dims.begin() + d + 1)),
                             offset);
    }
  }
  return dims;
}

struct GzCloser {
  gzFile f;
  ~GzCloser() {
    if (f) gzclose(f);
  }
};

// Reads exactly n bytes from a gz stream (raw files pass through gzread too).
// Returns how many bytes were read, or an error on a read failure.
StatusOr<size_t> GzReadFully(const std::string& path, gzFile f, uint8_t* dst, size_t n) {
  size_t done = 0;
  while (done < n) {
    int got = gzread(f, dst + done, static_cast<unsigned>(n - done));
    if (got < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      if (errnum == Z_ERRNO) return ErrnoStatus("cannot read", path, errno);
      return DataLoss("'{}': gzip data is corrupt near uncompressed byte {}: {}", path, done,
                      msg ? msg : "unknown");
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

// The header of an open IDX stream: magic and dims, with ParseMagic's and
// ParseDims's checks; `f` is left at the first data byte.
StatusOr<std::vector<int64_t>> ReadHeader(const std::string& path, gzFile f) {
  uint8_t header[kMagicBytes + 4 * kMaxDims];
  POLIS_ASSIGN_OR_RETURN(size_t got, GzReadFully(path, f, header, kMagicBytes));
  if (got < kMagicBytes) {
    return DataLoss("'{}': file ends at byte offset {}; expected a {}-byte IDX magic", path, got,
                    kMagicBytes);
  }
  POLIS_ASSIGN_OR_RETURN(int ndim, ParseMagic(path, header));
  const size_t dim_bytes = 4 * static_cast<size_t>(ndim);
  POLIS_ASSIGN_OR_RETURN(got, GzReadFully(path, f, header + kMagicBytes, dim_bytes));
  if (got < dim_bytes) {
    return DataLoss("'{}': file ends at byte offset {} inside the IDX header; expected {} header "
                    "bytes for {} dims",
                    path, kMagicBytes + got, kMagicBytes + dim_bytes, ndim);
  }
  return ParseDims(path, header + kMagicBytes, ndim);
}

// Opens `path` (gzip, every member of it, or raw: gzread reads both), checks
// the header and streams the data a megabyte at a time through
// consume(offset into the data, bytes, n); only the data bytes the dims
// promise are passed on. A file whose data is not exactly that long is
// DataLoss naming the (uncompressed) byte offset where the data ends, so no
// hostile header drives an allocation.
template <typename Consume>
StatusOr<std::vector<int64_t>> StreamIdx(const std::string& path, Consume consume) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return ErrnoStatus("cannot open", path, errno ? errno : ENOMEM);
  GzCloser closer{f};
  POLIS_ASSIGN_OR_RETURN(std::vector<int64_t> dims, ReadHeader(path, f));
  uint64_t elements = 1;
  for (int64_t d : dims) elements *= static_cast<uint64_t>(d);  // ParseDims proved this fits
  const uint64_t header_bytes = kMagicBytes + 4 * dims.size();
  const uint64_t expected = header_bytes + elements;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunkBytes]);
  uint64_t at = header_bytes;  // uncompressed offset of buf[0]
  while (true) {
    int n = gzread(f, buf.get(), static_cast<unsigned>(kChunkBytes));
    if (n < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      if (errnum == Z_ERRNO) return ErrnoStatus("cannot read", path, errno);
      return DataLoss("'{}': gzip data is corrupt or cut short after uncompressed byte offset {} "
                      "(dims {} need {} bytes): {}",
                      path, at, DimsString(dims), expected, msg ? msg : "unknown");
    }
    if (n == 0) break;
    if (at < expected) {
      const uint64_t take = std::min<uint64_t>(static_cast<uint64_t>(n), expected - at);
      consume(at - header_bytes, buf.get(), static_cast<size_t>(take));
    }
    at += static_cast<uint64_t>(n);
  }
  if (at < expected) {
    return DataLoss("'{}': IDX data ends at byte offset {} but dims {} need {} bytes ({} header + "
                    "{} data; {} missing)",
                    path, at, DimsString(dims), expected, header_bytes, elements, expected - at);
  }
  if (at > expected) {
    return DataLoss("'{}': IDX data for dims {} ends at byte offset {} but the file has {} bytes "
                    "({} trailing)",
                    path, DimsString(dims), expected, at, at - expected);
  }
  return dims;
}

}  // namespace

StatusOr<IdxArray> ReadIdx(const std::string& path) {
  IdxArray out;
  // The data grows as it arrives (never to more than the dims promise), so
  // a short file with a huge header costs only what it holds.
  POLIS_ASSIGN_OR_RETURN(out.dims, StreamIdx(path, [&](uint64_t, const uint8_t* p, size_t n) {
                           out.data.insert(out.data.end(), p, p + n);
                         }));
  return out;
}

StatusOr<std::vector<int64_t>> ReadIdxDims(const std::string& path) {
  // gzopen reads gzip transparently and passes raw files through unchanged.
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return ErrnoStatus("cannot open", path, errno ? errno : ENOMEM);
  GzCloser closer{f};
  return ReadHeader(path, f);
}

StatusOr<IdxScan> ScanIdx(const std::string& path) {
  IdxScan scan;
  POLIS_ASSIGN_OR_RETURN(scan.dims, StreamIdx(path, [&](uint64_t at, const uint8_t* p, size_t n) {
                           for (size_t i = 0; i < n; ++i) {
                             if (p[i] > scan.max_value) {
                               scan.max_value = p[i];
                               scan.max_index = static_cast<int64_t>(at + i);
                             }
                           }
                         }));
  return scan;
}

}  // namespace polis::data
