// Sharded datasets on disk (docs/datasets.md): WebDataset-style POSIX tar
// shards that `tar` and Python's `webdataset` read as they are, each with a
// JSON index beside it so that a worker can pread the one record it was
// granted, and a manifest naming the shards of each part. Two kinds:
// labelled images, and the windows of a CSV time series (manifest "kind":
// "timeseries", below).
//
//   DIR/dataset.json          manifest: shape, classes, shards per part and
//                             each index's SHA-256
//   DIR/train-000000.tar      members KEY.png (or KEY.jpg) then KEY.cls
//                             (the label as decimal text), KEY = 9+ digits
//   DIR/train-000000.idx      per record: key, label, data offset, size and
//                             CRC-32 (zlib) of the image bytes
//
// Time-series windows: parts train, validation and test; record i of a part
// is window i of that split. Members KEY.input.npy (float32, (lookback,
// features)) then KEY.target.npy (float32, (horizon,)), adjacent: a
// record's offset and size cover the input's bytes, its padding, the
// target's header and bytes, so one pread reads both; target_at says where
// the target's bytes start and the CRC-32 covers the whole span.
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
#include <string_view>
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
  uint32_t target_at = 0;  // windows: the target's bytes, from `offset` (0 for images)
};

// The members of a time-series window record.
inline constexpr char kWindowInputExt[] = "input.npy";
inline constexpr char kWindowTargetExt[] = "target.npy";

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
  bool windows = false;              // time-series window records
  // The member name's extension of each record's first member.
  const char* extension() const { return windows ? kWindowInputExt : EncodingExtension(encoding); }
};

struct ShardManifest {
  std::string kind = "images";  // or "timeseries"
  int channels = 1, height = 0, width = 0;
  ImageEncoding encoding = ImageEncoding::kPng;
  std::vector<std::string> classes;
  std::string source;  // what was packed, for people
  std::vector<ShardFileInfo> train, validation, test;  // validation: time series only
  // Time series: the window's shape, the features by name, the job's
  // TimeSeriesSpec (text proto), the statistics fitted on the training split
  // with the CSV's header (Dataset::PreprocessingJson) and the baselines per
  // split ({"train": {...}, "validation": ..., "test": ...}, JSON).
  int64_t lookback = 0, horizon = 0;
  std::vector<std::string> features;
  std::string timeseries_spec, preprocessing, baselines;
  // What the packer said about its source: for a time series the CSV
  // reader's report (the row policies' counts and first lines, features,
  // splits; TimeSeriesDataset::report), for a folder the images it left out
  // (--skip-bad). Absent when there is nothing to say, and from manifests
  // packed before it was recorded.
  std::string report;

  bool timeseries() const { return kind == "timeseries"; }
  int64_t records(bool test_part) const;
  int64_t records(const std::vector<ShardFileInfo>& part) const;
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
  // Time-series window records (AddWindow).
  ShardWriter(std::string dir, std::string part, int64_t records_per_shard);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  // `image` must already be encoded with the writer's encoding.
  Status Add(int32_t label, const std::string& image, const std::string& source);
  // A time-series window: the two .npy files, as one record.
  Status AddWindow(const std::string& input_npy, const std::string& target_npy);
  // Closes the last shard; the list of shards for the manifest.
  StatusOr<std::vector<ShardFileInfo>> Finish();

 private:
  Status Open();
  Status Close();
  Status Write(const void* p, size_t n);
  Status WriteMember(const std::string& name, const std::string& bytes);
  Status Added(ShardRecord r, const std::string& source);

  std::string dir_, part_;
  int64_t per_shard_;
  ImageEncoding encoding_;
  bool windows_ = false;
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
// (name KEY.`ext` and size must match the index) and bytes (CRC-32 must
// match); a window record's span also holds the target's header, checked
// too. On DataLoss the message names the file and the byte offset.
Status ReadRecordBytes(int fd, const std::string& path, const ShardRecord& r, const char* ext, std::string* bytes);

// A window record's bytes (as ReadRecordBytes gives them) to lookback x
// features input floats and horizon target floats; "" or what is wrong
// (dtype, shape, sizes).
std::string ParseWindowRecord(std::string_view bytes, const ShardRecord& r, int64_t lookback, int64_t features,
                              int64_t horizon, float* x, float* y);
// The .npy file of a float32 array.
std::string FloatNpy(const float* values, const std::vector<int64_t>& shape);

// Everything `polis-data verify` checks, on every record of both parts:
// the manifest, each index's checksum, each tar's length, every member's
// header, CRC-32, decoded shape and label, and the .cls member; of a time
// series, every window's two .npy headers, shapes and finite values. One line per
// problem (file, byte offset, what); `records` counts records checked.
struct VerifyResult {
  int64_t records = 0, shards = 0;
  std::vector<std::string> problems;
};
VerifyResult VerifyShards(const std::string& dir, int max_problems = 100);

}  // namespace polis::data
