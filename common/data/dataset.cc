#include "common/data/dataset.h"

#include <algorithm>

#include "common/data/image_dataset.h"
#include "common/data/shard_dataset.h"
#include "common/data/split.h"
#include "common/data/timeseries.h"
#include "common/env.h"

namespace polis::data {
namespace {

int64_t Limit(int64_t size, int64_t limit) { return limit > 0 ? std::min(size, limit) : size; }

// The training file's samples are split into kTrain and kValidation by
// index maps; kTest is the test file as it is.
class Images : public Dataset {
 public:
  Images(ImageDataset train, ImageDataset test, std::vector<std::string> files, int64_t validation,
         uint64_t seed)
      : train_(std::move(train)), test_(std::move(test)), files_(std::move(files)) {
    std::vector<int32_t> labels(train_.size());
    for (int64_t i = 0; i < train_.size(); ++i) labels[i] = train_.label(i);
    split_ = StratifiedSplit(labels, train_.num_classes(), validation, seed);
  }
  Task task() const override { return Task::kClassification; }
  int64_t size(Part p) const override {
    if (p == Part::kTest) return test_.size();
    return static_cast<int64_t>(p == Part::kTrain ? split_.train.size() : split_.validation.size());
  }
  std::vector<int64_t> sample_shape() const override { return train_.sample_shape(); }
  int64_t target_width() const override { return train_.num_classes(); }
  void Gather(Part p, const int64_t* idx, int64_t n, float* x, float* y) const override {
    const ImageDataset& d = p == Part::kTest ? test_ : train_;
    const std::vector<int64_t>* map = p == Part::kTrain ? &split_.train
                                      : p == Part::kValidation ? &split_.validation : nullptr;
    const int64_t e = d.sample_elements();
    for (int64_t i = 0; i < n; ++i) {
      if (map) POLIS_ENFORCE_LT(idx[i], static_cast<int64_t>(map->size()));
      const int64_t at = map ? (*map)[static_cast<size_t>(idx[i])] : idx[i];
      d.Gather(&at, 1, x + i * e, &label_);
      y[i] = static_cast<float>(label_);
    }
  }
  std::vector<std::string> files() const override { return files_; }

 private:
  ImageDataset train_, test_;
  std::vector<std::string> files_;
  TrainValidationSplit split_;
  mutable int32_t label_ = 0;
};

TimeSeriesDataset::Split SeriesSplit(Part p) {
  return p == Part::kTrain ? TimeSeriesDataset::kTrain
         : p == Part::kValidation ? TimeSeriesDataset::kValidation : TimeSeriesDataset::kTest;
}

class Series : public Dataset {
 public:
  Series(TimeSeriesDataset ds, int64_t train_limit, int64_t test_limit)
      : ds_(std::move(ds)), train_limit_(train_limit), test_limit_(test_limit) {}
  Task task() const override { return Task::kRegression; }
  int64_t size(Part p) const override {
    const int64_t n = ds_.size(SeriesSplit(p));
    return p == Part::kTrain ? Limit(n, train_limit_) : p == Part::kTest ? Limit(n, test_limit_) : n;
  }
  std::vector<int64_t> sample_shape() const override { return ds_.sample_shape(); }
  int64_t target_width() const override { return ds_.horizon(); }
  void Gather(Part p, const int64_t* idx, int64_t n, float* x, float* y) const override {
    ds_.Gather(SeriesSplit(p), idx, n, x, y);
  }
  double TargetToOriginal(double v) const override { return ds_.TargetToOriginal(v); }
  std::vector<std::string> files() const override { return {ds_.spec().path()}; }
  nlohmann::json Baselines() const override {
    return nlohmann::json::parse(ds_.BaselinesJson(TimeSeriesDataset::kTest, size(Part::kTest)));
  }
  std::string PreprocessingJson() const override { return ds_.PreprocessingJson(); }
  const proto::TimeSeriesSpec* timeseries_spec() const override { return &ds_.spec(); }
  std::string Report() const override { return ds_.report(); }

 private:
  TimeSeriesDataset ds_;
  int64_t train_limit_, test_limit_;
};

}  // namespace

std::vector<std::string> ReportLines(const std::string& report) {
  std::vector<std::string> lines;
  std::string_view rest = report;
  while (!rest.empty()) {
    const size_t end = std::min(rest.find('\n'), rest.size());
    std::string_view line = rest.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(' ') != std::string_view::npos) lines.emplace_back(line);
    rest.remove_prefix(std::min(end + 1, rest.size()));
  }
  return lines;
}

StatusOr<std::unique_ptr<Dataset>> OpenJobDataset(const proto::JobSpec& job) {
  return OpenDataset(job.dataset(), job.training().seed());
}

StatusOr<std::unique_ptr<Dataset>> OpenJobDataset(const proto::JobSpec& job, std::shared_ptr<RecordClient> remote) {
  if (remote == nullptr) return OpenJobDataset(job);
  return OpenRemoteShardDataset(job.dataset(), job.training().seed(), std::move(remote));
}

StatusOr<std::unique_ptr<Dataset>> OpenDataset(const proto::DatasetSpec& d, uint64_t split_seed) {
  if (d.format() == proto::DatasetSpec::CSV) {
    if (!d.has_timeseries()) return InvalidArgument("dataset.timeseries is required for format CSV");
    POLIS_ASSIGN_OR_RETURN(TimeSeriesDataset ds, TimeSeriesDataset::Open(d.timeseries()));
    return std::unique_ptr<Dataset>(new Series(std::move(ds), d.train_limit(), d.test_limit()));
  }
  if (d.format() == proto::DatasetSpec::SHARDS) return OpenShardDataset(d, split_seed);
  const DatasetPaths p = ResolveDataset(d);
  std::vector<std::string> files = {p.train_images, p.train_labels, p.test_images, p.test_labels};
  POLIS_ASSIGN_OR_RETURN(ImageDataset train, ImageDataset::Open(files[0], files[1], d.num_classes(),
                                                                d.scale(), d.shift(), d.train_limit()));
  POLIS_ASSIGN_OR_RETURN(ImageDataset test, ImageDataset::Open(files[2], files[3], d.num_classes(),
                                                               d.scale(), d.shift(), d.test_limit()));
  const int64_t validation = ValidationCount(d, train.size());
  return std::unique_ptr<Dataset>(
      new Images(std::move(train), std::move(test), std::move(files), validation, split_seed));
}

DatasetPaths ResolveDataset(const proto::DatasetSpec& d) {
  std::string dir = d.dir() == "fashion-mnist" ? env::FashionMnistDir() : d.dir();
  auto join = [&](const std::string& f) { return f.empty() || f[0] == '/' ? f : dir + "/" + f; };
  return {join(d.train_images()), join(d.train_labels()), join(d.test_images()),
          join(d.test_labels())};
}

}  // namespace polis::data
