// Files: whole-file reads, gzip-aware reads, crash-safe writes, SHA-256.
//
// WriteFileAtomic writes to "<path>.tmp-<pid>-<n>", fsyncs it, renames it over
// <path> and fsyncs the directory, so a reader sees the old file or the new
// one, never half of one. Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace polis {

// The whole file; one whose size stat reports as 0 (/proc, /sys) is read to
// its end (at most 64 MiB).
StatusOr<std::string> ReadFile(const std::string& path);
// Reads a file, inflating it if it starts with the gzip magic (1f 8b):
// every member of a multi-member file (as `cat a.gz b.gz` makes), in order.
// An inflated size beyond max_bytes (default: AvailableMemoryBytes()) is an
// error naming the file and the limit, not an allocation that fails later.
StatusOr<std::string> ReadMaybeGzip(const std::string& path, int64_t max_bytes = 0);
// Physical memory, or the cgroup limit (/sys/fs/cgroup/memory.max) if lower.
int64_t AvailableMemoryBytes();
Status WriteFileAtomic(const std::string& path, std::string_view contents);
// fsync of a directory, so a rename inside it survives a crash.
Status SyncDirectory(const std::string& dir);
Status MakeDirectories(const std::string& dir);
bool PathExists(const std::string& path);

// Lower-case hex SHA-256.
std::string Sha256Hex(std::string_view data);
StatusOr<std::string> Sha256File(const std::string& path);

// "2026-11-28T13:41:45Z"
std::string UtcTimestamp();

}  // namespace polis
