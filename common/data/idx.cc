#include "common/data/idx.h"

#include <fmt/ranges.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "common/fs.h"

namespace polis::data {
namespace {

constexpr size_t kMagicBytes = 4;
constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr int kMaxDims = 4;

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

}  // namespace

StatusOr<IdxArray> ReadIdx(const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ReadMaybeGzip(path));
  const auto* raw = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.size() < kMagicBytes) {
    return DataLoss("'{}': file ends at byte offset {}; expected a {}-byte IDX magic", path,
                    bytes.size(), kMagicBytes);
  }
  POLIS_ASSIGN_OR_RETURN(int ndim, ParseMagic(path, raw));
  const size_t header = kMagicBytes + 4 * static_cast<size_t>(ndim);
  if (bytes.size() < header) {
    return DataLoss("'{}': file ends at byte offset {} inside the IDX header; expected {} header "
                    "bytes for {} dims",
                    path, bytes.size(), header, ndim);
  }
  IdxArray out;
  POLIS_ASSIGN_OR_RETURN(out.dims, ParseDims(path, raw + kMagicBytes, ndim));
  int64_t elements = 1;
  for (int64_t d : out.dims) elements *= d;  // ParseDims proved this fits
  const uint64_t expected = header + static_cast<uint64_t>(elements);
  if (bytes.size() < expected) {
    return DataLoss("'{}': IDX data ends at byte offset {} but dims {} need {} bytes ({} header + "
                    "{} data; {} missing)",
                    path, bytes.size(), DimsString(out.dims), expected, header, elements,
                    expected - bytes.size());
  }
  if (bytes.size() > expected) {
    return DataLoss("'{}': IDX data for dims {} ends at byte offset {} but the file has {} bytes "
                    "({} trailing)",
                    path, DimsString(out.dims), expected, bytes.size(), bytes.size() - expected);
  }
  out.data.assign(raw + header, raw + expected);
  return out;
}

StatusOr<std::vector<int64_t>> ReadIdxDims(const std::string& path) {
  // gzopen reads gzip transparently and passes raw files through unchanged.
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return ErrnoStatus("cannot open", path, errno ? errno : ENOMEM);
  GzCloser closer{f};
  uint8_t magic[kMagicBytes];
  POLIS_ASSIGN_OR_RETURN(size_t got, GzReadFully(path, f, magic, kMagicBytes));
  if (got < kMagicBytes) {
    return DataLoss("'{}': file ends at byte offset {}; expected a {}-byte IDX magic", path, got,
                    kMagicBytes);
  }
  POLIS_ASSIGN_OR_RETURN(int ndim, ParseMagic(path, magic));
  uint8_t raw_dims[4 * kMaxDims];
  const size_t dim_bytes = 4 * static_cast<size_t>(ndim);
  POLIS_ASSIGN_OR_RETURN(got, GzReadFully(path, f, raw_dims, dim_bytes));
  if (got < dim_bytes) {
    return DataLoss("'{}': file ends at byte offset {} inside the IDX header; expected {} header "
                    "bytes for {} dims",
                    path, kMagicBytes + got, kMagicBytes + dim_bytes, ndim);
  }
  return ParseDims(path, raw_dims, ndim);
}

StatusOr<IdxScan> ScanIdx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return ErrnoStatus("cannot open", path, errno ? errno : ENOMEM);
  GzCloser closer{f};
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
  IdxScan scan;
  POLIS_ASSIGN_OR_RETURN(scan.dims, ParseDims(path, header + kMagicBytes, ndim));
  uint64_t elements = 1;
  for (int64_t d : scan.dims) elements *= static_cast<uint64_t>(d);  // ParseDims proved this fits
  const uint64_t header_bytes = kMagicBytes + dim_bytes;
  const uint64_t expected = header_bytes + elements;
  std::vector<uint8_t> buf(size_t{1} << 20);
  uint64_t at = header_bytes;  // uncompressed offset of buf[0]
  while (true) {
    int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      if (errnum == Z_ERRNO) return ErrnoStatus("cannot read", path, errno);
      return DataLoss("'{}': gzip data is corrupt or cut short after uncompressed byte offset {} "
                      "(dims {} need {} bytes): {}",
                      path, at, DimsString(scan.dims), expected, msg ? msg : "unknown");
    }
    if (n == 0) break;
    const uint64_t data_end = std::min<uint64_t>(at + static_cast<uint64_t>(n), expected);
    for (uint64_t i = at; i < data_end; ++i) {
      const uint8_t v = buf[i - at];
      if (v > scan.max_value) {
        scan.max_value = v;
        scan.max_index = static_cast<int64_t>(i - header_bytes);
      }
    }
    at += static_cast<uint64_t>(n);
  }
  if (at < expected) {
    return DataLoss("'{}': IDX data ends at byte offset {} but dims {} need {} bytes ({} header + "
                    "{} data; {} missing)",
                    path, at, DimsString(scan.dims), expected, header_bytes, elements, expected - at);
  }
  if (at > expected) {
    return DataLoss("'{}': IDX data for dims {} ends at byte offset {} but the file has {} bytes "
                    "({} trailing)",
                    path, DimsString(scan.dims), expected, at, at - expected);
  }
  return scan;
}

}  // namespace polis::data
