#include "common/fs.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>

#include <atomic>
#include <cerrno>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>

namespace polis {
namespace {

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open", path, errno);
  FdCloser closer{fd};
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus("cannot stat", path, errno);
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = read(fd, out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot read", path, errno);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  // Regular files whose size stat does not tell (/proc and /sys report 0):
  // read to the end, at most 64 MiB.
  while (st.st_size == 0 && S_ISREG(st.st_mode) && done < (64u << 20)) {
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot read", path, errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

StatusOr<std::string> ReadMaybeGzip(const std::string& path, int64_t max_bytes) {
  POLIS_ASSIGN_OR_RETURN(std::string raw, ReadFile(path));
  auto gzip_at = [&](size_t at) {
    return raw.size() >= at + 2 && static_cast<unsigned char>(raw[at]) == 0x1f &&
           static_cast<unsigned char>(raw[at + 1]) == 0x8b;
  };
  if (!gzip_at(0)) return raw;
  if (max_bytes <= 0) max_bytes = AvailableMemoryBytes();
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return InternalError("inflateInit2 failed");
  std::unique_ptr<z_stream, int (*)(z_stream*)> end(&zs, inflateEnd);
  std::string out;
  out.resize(std::min<size_t>(raw.size() * 4 + 1024, static_cast<size_t>(max_bytes) + 1));
  size_t in_at = 0, out_at = 0;  // totals over every member
  constexpr size_t kChunk = 1u << 30;  // z_stream counts in uInt
  while (true) {
    if (out_at == out.size()) {
      if (out.size() > static_cast<size_t>(max_bytes))
        return FailedPrecondition("'{}' inflates to more than {} bytes (this machine's memory, or the limit given); "
                                 "compressed byte {} of {} reached",
                                 path, max_bytes, in_at, raw.size());
      out.resize(std::min<size_t>(out.size() * 2, static_cast<size_t>(max_bytes) + 1));
    }
    zs.next_in = reinterpret_cast<Bytef*>(raw.data() + in_at);
    zs.avail_in = static_cast<uInt>(std::min(raw.size() - in_at, kChunk));
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + out_at);
    zs.avail_out = static_cast<uInt>(std::min(out.size() - out_at, kChunk));
    const uInt in_before = zs.avail_in, out_before = zs.avail_out;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    in_at += in_before - zs.avail_in;
    out_at += out_before - zs.avail_out;
    if (rc == Z_STREAM_END) {
      if (in_at == raw.size()) break;
      // Another member follows, or bytes that are not gzip.
      if (!gzip_at(in_at))
        return DataLoss("'{}': {} bytes after the end of the gzip data at compressed byte {} are not gzip", path,
                        raw.size() - in_at, in_at);
      inflateReset(&zs);
      continue;
    }
    if (rc == Z_BUF_ERROR && in_at == raw.size())
      return DataLoss("'{}': gzip stream is truncated (compressed input ends at byte {})", path, in_at);
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      return DataLoss("'{}': gzip data is corrupt near compressed byte {}: {}", path, in_at,
                      zs.msg ? zs.msg : "unknown");
  }
  out.resize(out_at);
  return out;
}

int64_t AvailableMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  int64_t bytes = pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page
                                        : std::numeric_limits<int64_t>::max();
  std::ifstream cg("/sys/fs/cgroup/memory.max");
  std::string limit;
  if (cg >> limit && limit != "max") {
    char* end = nullptr;
    const long long v = std::strtoll(limit.c_str(), &end, 10);
    if (end != limit.c_str() && *end == '\0' && v > 0 && v < bytes) bytes = v;
  }
  return bytes;
}


Status SyncDirectory(const std::string& dir) {
  int fd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open directory", dir, errno);
  FdCloser closer{fd};
  if (fsync(fd) != 0) return ErrnoStatus("cannot fsync directory", dir, errno);
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, std::string_view contents) {
  static std::atomic<int> counter{0};
  std::string tmp = fmt::format("{}.tmp-{}-{}", path, getpid(), counter++);
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", tmp, errno);
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return ErrnoStatus("cannot write", tmp, err);
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    int err = errno;
    close(fd);
    unlink(tmp.c_str());
    return ErrnoStatus("cannot fsync", tmp, err);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return ErrnoStatus("cannot rename into", path, err);
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDirectory(dir.empty() ? "." : dir);
}

Status MakeDirectories(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError("cannot create directory '{}': {}", dir, ec.message());
  return Status::Ok();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

StatusOr<std::string> Sha256File(const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string data, ReadFile(path));
  return Sha256Hex(data);
}

std::string UtcTimestamp() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace polis
