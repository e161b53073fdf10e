// Packing datasets into shards (common/data/shard_format.h): what
// `polis-data pack idx`, `pack folder` and `pack csv` do, callable from
// tests. One thread; the output directory is the caller's alone.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/data/image_codec.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::data {

struct PackOptions {
  std::string out;                     // created; refused if it already holds a dataset.json
  ImageEncoding encoding = ImageEncoding::kPng;
  int jpeg_quality = 90;
  int64_t records_per_shard = 10000;
  int height = 0, width = 0;           // 0: the source's size (IDX only; folders need a size)
  int channels = 0;                    // 0: the source's (IDX: 1; folders: 3)
  int64_t train_limit = 0, test_limit = 0;  // first N source records (0 = all)
  // Each training image `copies` times; every copy after the first with a
  // seeded random crop (padding 2), flip and brightness/contrast jitter:
  // a larger dataset from a small one.
  int copies = 1;
  uint64_t seed = 1;                   // the copies' augmentation, the folders' record order
  bool skip_bad = false;               // folders: leave out images that cannot be decoded
  double test_fraction = 0.2;          // folders without a test folder: held out per class
  std::function<void(const std::string&)> warn;  // one line per skipped file
  // After each source record of a part ("train", "validation", "test"):
  // records done of the part's total.
  std::function<void(const char* part, int64_t done, int64_t total)> progress;
};

struct PackSummary {
  int64_t train = 0, test = 0, train_shards = 0, test_shards = 0, skipped = 0, bytes = 0;
  int64_t validation = 0, validation_shards = 0;  // time series
  bool windows = false;
  std::string report;  // time series: the CSV reader's report (printed before the summary)
  std::string ToString(const std::string& out) const;
};

// The four IDX files (gzip or raw) of an MNIST-style dataset.
StatusOr<PackSummary> PackIdx(const std::string& train_images, const std::string& train_labels,
                              const std::string& test_images, const std::string& test_labels,
                              const PackOptions& o);

// train_root/CLASS/*.{png,jpg,jpeg}; classes are the sub-folders, sorted by
// name, unless `classes` lists them (then each must exist). test_root, if
// given, must hold the same class folders; otherwise test_fraction of each
// class's files (every k-th by name) is the test part. Records are stored
// in a seeded shuffled order.
StatusOr<PackSummary> PackFolder(const std::string& train_root, const std::string& test_root,
                                 const std::vector<std::string>& classes, const PackOptions& o);

// The windows of a job's CSV time series (dataset.timeseries), made exactly
// as training makes them (TimeSeriesDataset::Open: row policies, calendar,
// categoricals, time splits, statistics fitted on the training split):
// window i of each split is record i of part train / validation / test,
// KEY.input.npy and KEY.target.npy, standardised float32. Uses `out` and
// `records_per_shard` of `o`; dataset.train_limit / test_limit are not
// applied (a job reading the shards applies its own).
StatusOr<PackSummary> PackTimeSeries(const proto::JobSpec& job, const PackOptions& o);

}  // namespace polis::data
