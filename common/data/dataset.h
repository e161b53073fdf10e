// Dataset: what training and evaluation read, whatever the file format.
// Two kinds today: labelled images (IDX, classification) and windows of a
// CSV time series (regression, common/data/timeseries.h). Immutable after
// Open; Gather may be called from one thread at a time per object.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::data {

enum class Task { kClassification, kRegression };
// kValidation: held out of the training samples (IDX, dataset.validation_*;
// common/data/split.h) or the time series' validation months; empty when
// the job has none. kTrain is what is left of the training samples.
enum class Part { kTrain, kValidation, kTest };

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual Task task() const = 0;
  // Samples (windows) in a part, after dataset.train_limit / test_limit.
  virtual int64_t size(Part p) const = 0;
  virtual std::vector<int64_t> sample_shape() const = 0;
  // Outputs the model must give: classes, or forecast horizon.
  virtual int64_t target_width() const = 0;
  // x: n × sample floats; y: n class labels (as floats) or n × horizon
  // standardised targets. No allocation.
  virtual void Gather(Part p, const int64_t* indices, int64_t n, float* x, float* y) const = 0;
  // A (standardised) target value in the original units.
  virtual double TargetToOriginal(double v) const { return v; }
  // Files read, for lineage checksums.
  virtual std::vector<std::string> files() const = 0;
  // Regression: reference forecasts on the test part (seasonal naive, last
  // value) as {"seasonal_naive_mae": …, …}; empty for classification.
  virtual nlohmann::json Baselines() const { return nlohmann::json::object(); }
  // Preprocessing to store in the model artifact ("" when none).
  virtual std::string PreprocessingJson() const { return ""; }
  // Time series (CSV, or SHARDS packed from one): the TimeSeriesSpec the
  // windows were made with, which serving needs to make them from raw rows
  // again; null for images.
  virtual const proto::TimeSeriesSpec* timeseries_spec() const { return nullptr; }
  // What was read, in lines (rows, drops, fills, splits); "" when nothing
  // to say. Printed at the start of a job, kept in result.json and the model
  // card (ReportLines splits it).
  virtual std::string Report() const { return ""; }
  // Streaming datasets (SHARDS): the samples the caller will Gather next, to
  // read and decode ahead while it computes; a hint, bounded by the
  // dataset's queue. Others ignore it.
  virtual void Prefetch(Part, const int64_t* /*indices*/, int64_t /*n*/) const {}
  // The epoch whose samples are gathered next (augmentation draws from it;
  // prefetched samples of another epoch are dropped).
  virtual void SetEpoch(int /*epoch*/) const {}
  // A record that could not be read or decoded under malformed_policy FAIL:
  // Gather filled its place with zeros and kept the first such error, which
  // this returns once (OK otherwise).
  virtual Status TakeError() const { return Status::Ok(); }
  // SHARDS: one sample as stored, checked against its CRC-32, as a
  // coordinator sends it to workers (dataset.source COORDINATOR): an image
  // file and its label, or a time-series window's two .npy members and where
  // the second starts. Thread-safe. Unimplemented elsewhere.
  struct EncodedRecord {
    std::string bytes;
    int32_t label = 0;       // images
    uint32_t target_at = 0;  // windows: the target member's bytes, from the start
  };
  virtual Status ReadEncoded(Part, int64_t /*index*/, EncodedRecord* /*out*/) const {
    return Unimplemented("only SHARDS datasets hold encoded records");
  }
  // SHARDS: the size of the largest stored record (0 elsewhere).
  virtual int64_t max_encoded_bytes() const { return 0; }
};

class RecordClient;  // common/data/remote_shards.h

// Report() as its lines, blank ones left out.
std::vector<std::string> ReportLines(const std::string& report);

// split_seed draws the IDX validation split (training.seed): every rank of a
// job must pass the same, so ranks open a job's data with OpenJobDataset.
StatusOr<std::unique_ptr<Dataset>> OpenDataset(const proto::DatasetSpec& spec, uint64_t split_seed);
StatusOr<std::unique_ptr<Dataset>> OpenJobDataset(const proto::JobSpec& job);
// On a rank whose records come from the coordinator (dataset.source
// COORDINATOR, every rank but the coordinator): `remote` describes the data
// and fetches the records. Null: the files are read here.
StatusOr<std::unique_ptr<Dataset>> OpenJobDataset(const proto::JobSpec& job, std::shared_ptr<RecordClient> remote);

// The four IDX files of an image dataset, resolved against dataset.dir
// ("fashion-mnist" means $POLIS_FASHION_MNIST_DIR).
struct DatasetPaths {
  std::string train_images, train_labels, test_images, test_labels;
};
DatasetPaths ResolveDataset(const proto::DatasetSpec& d);

}  // namespace polis::data
