// Sharded image datasets on disk (docs/datasets.md): WebDataset-style POSIX
// tar shards that `tar` and Python's `webdataset` read as they are, each
// with a JSON index beside it so that a worker can pread the one record it
// was granted, and a manifest naming the shards of each part.
//
//   DIR/dataset.json          manifest: shape, classes, shards per part and
//                             each index's SHA-256
//   DIR/train-000000.tar      members KEY.png (or KEY.jpg) then KEY.cls
//                             (the label as decimal text), KEY = 9+ digits
//   DIR/train-000000.idx      per record: key, label, data offset, size and
//                             CRC-32 (zlib) of the image bytes
//
// Every file is written crash-safe (temporary name, fsync, rename, fsync
// of the directory); the manifest goes last, so a dataset whose pack was
// interrupted has no manifest and is refused as incomplete. Readers check
// what they read and answer bad bytes with one sentence naming the file and
// the byte offset. Free functions and value types: thread-safe; a
// ShardWriter belongs to one thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/data/image_codec.h"
#include "common/status.h"

namespace polis::data {

struct ShardRecord {
  int64_t key = 0;      // the member name's stem, "000000042" -> 42
  int64_t offset = 0;   // of the image bytes in the tar (its header is 512 bytes before)
  uint32_t size = 0;    // image bytes
  uint32_t crc32 = 0;   // zlib crc32 of the image bytes
  int32_t label = 0;
};

struct ShardFileInfo {
  std::string tar, index;  // file names inside the dataset directory
  int64_t records = 0;
  int64_t tar_bytes = 0;
  std::string index_sha256;
};

struct ShardIndex {
  std::string tar;
  int64_t tar_bytes = 0;
  ImageEncoding encoding = ImageEncoding::kPng;
  std::vector<ShardRecord> records;
  std::vector<std::string> sources;  // the file each record came from ("" for IDX); may be empty
};

struct ShardManifest {
  int channels = 1, height = 0, width = 0;
  ImageEncoding encoding = ImageEncoding::kPng;
  std::vector<std::string> classes;
  std::string source;  // what was packed, for people
  std::vector<ShardFileInfo> train, test;
  int64_t records(bool test_part) const;
};

inline constexpr char kManifestName[] = "dataset.json";
inline constexpr int64_t kTarBlock = 512;

// Reads DIR/dataset.json. NotFound names the file ("no dataset.json: not a
// directory written by polis-data pack, or the pack did not finish").
StatusOr<ShardManifest> ReadManifest(const std::string& dir);
Status WriteManifest(const std::string& dir, const ShardManifest& m);
// Reads and checks one index against the manifest's SHA-256 and record count.
StatusOr<ShardIndex> ReadShardIndex(const std::string& dir, const ShardFileInfo& f);

// Writes one part ("train", "test") of a dataset as shards of at most
// records_per_shard records.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string part, int64_t records_per_shard, ImageEncoding encoding);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  // `image` must already be encoded with the writer's encoding.
  Status Add(int32_t label, const std::string& image, const std::string& source);
  // Closes the last shard; the list of shards for the manifest.
  StatusOr<std::vector<ShardFileInfo>> Finish();

 private:
  Status Open();
  Status Close();
  Status Write(const void* p, size_t n);
  Status WriteMember(const std::string& name, const std::string& bytes);

  std::string dir_, part_;
  int64_t per_shard_;
  ImageEncoding encoding_;
  std::FILE* f_ = nullptr;
  std::string tmp_path_;
  int64_t offset_ = 0, next_key_ = 0;
  ShardIndex index_;
  std::vector<ShardFileInfo> done_;
};

// A 512-byte ustar header for a regular file (mode 0644, mtime 0, owner
// root), with its checksum.
std::string TarHeader(const std::string& name, int64_t size);
std::string MemberName(int64_t key, const char* ext);

// Reads record `r` of the tar open as `fd` (path for messages): its header
// (name and size must match the index) and bytes (CRC-32 must match). On
// DataLoss the message names the file and the byte offset.
Status ReadRecordBytes(int fd, const std::string& path, const ShardRecord& r, ImageEncoding e, std::string* bytes);

// Everything `polis-data verify` checks, on every record of both parts:
// the manifest, each index's checksum, each tar's length, every member's
// header, CRC-32, decoded shape and label, and the .cls member. One line per
// problem (file, byte offset, what); `records` counts records checked.
struct VerifyResult {
  int64_t records = 0, shards = 0;
  std::vector<std::string> problems;
};
VerifyResult VerifyShards(const std::string& dir, int max_problems = 100);

}  // namespace polis::data
