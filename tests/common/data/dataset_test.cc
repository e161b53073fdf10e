// The Dataset adapters: images (classification) and a CSV time series
// (regression) behind one interface.
#include <gtest/gtest.h>
#include "tests/prereq.h"

#include "common/data/dataset.h"
#include "common/fs.h"
#include "common/job_spec.h"

namespace polis::data {
namespace {

const std::string kHourCsv = std::string(POLIS_SOURCE_DIR) + "/../shared/data/bike-sharing/hour.csv";

TEST(Dataset, BikeSharingWindowsAndBaselines) {
  if (!PathExists(kHourCsv))
    POLIS_MISSING_PREREQ() << "the UCI bike-sharing data is not at " << kHourCsv << " (it ships in shared/data)";
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/bike_demand_lstm.pbtxt");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto spec = job->spec.dataset();
  spec.mutable_timeseries()->set_path(kHourCsv);
  auto ds = OpenDataset(spec, 42);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ((*ds)->task(), Task::kRegression);
  EXPECT_EQ((*ds)->target_width(), 1);
  EXPECT_EQ((*ds)->sample_shape()[0], 168);
  EXPECT_GT((*ds)->size(Part::kTrain), 10000);
  EXPECT_GT((*ds)->size(Part::kTest), 1500);
  auto b = (*ds)->Baselines();
  EXPECT_GT(b["seasonal_naive_mae"].get<double>(), 10);
  EXPECT_GT(b["last_value_mae"].get<double>(), 10);
  std::vector<float> x(168 * (*ds)->sample_shape()[1]), y(1);
  int64_t i = 0;
  (*ds)->Gather(Part::kTest, &i, 1, x.data(), y.data());
  EXPECT_GE((*ds)->TargetToOriginal(y[0]), 0.0);
  EXPECT_FALSE((*ds)->PreprocessingJson().empty());
}

// The time series' validation months are Part::kValidation, between train
// and test; without them the part is empty.
TEST(Dataset, TimeSeriesValidationMonthsArePartValidation) {
  if (!PathExists(kHourCsv)) POLIS_MISSING_PREREQ() << "the UCI bike-sharing data is not at " << kHourCsv;
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/bike_demand_lstm.pbtxt");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto spec = job->spec.dataset();
  spec.mutable_timeseries()->set_path(kHourCsv);
  auto without = OpenDataset(spec, 42);
  ASSERT_TRUE(without.ok()) << without.status().ToString();
  EXPECT_EQ((*without)->size(Part::kValidation), 0);
  spec.mutable_timeseries()->set_validation_months(2);
  auto with = OpenDataset(spec, 42);
  ASSERT_TRUE(with.ok()) << with.status().ToString();
  EXPECT_GT((*with)->size(Part::kValidation), 1000);  // two months of hourly windows
  EXPECT_EQ((*with)->size(Part::kTest), (*without)->size(Part::kTest));
  EXPECT_LT((*with)->size(Part::kTrain), (*without)->size(Part::kTrain));
}

// IDX images: dataset.validation_fraction holds a stratified part of the
// (limited) training samples out; every sample lands in exactly one part.
TEST(Dataset, ImageValidationSplitIsHeldOutOfTraining) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!PathExists(dir + "/train-images-idx3-ubyte.gz")) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed";
  proto::DatasetSpec spec;
  spec.set_dir(dir);
  spec.set_train_limit(2000);
  spec.set_test_limit(100);
  spec.set_validation_fraction(0.1f);
  auto ds = OpenDataset(spec, 42);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ((*ds)->size(Part::kTrain), 1800);
  EXPECT_EQ((*ds)->size(Part::kValidation), 200);
  EXPECT_EQ((*ds)->size(Part::kTest), 100);
  // Labels of each part: the validation part has ~10 % of each class.
  auto counts = [&](Part p) {
    std::vector<int64_t> n(10, 0);
    std::vector<float> x(28 * 28), y(1);
    for (int64_t i = 0; i < (*ds)->size(p); ++i) {
      (*ds)->Gather(p, &i, 1, x.data(), y.data());
      ++n[static_cast<int>(y[0])];
    }
    return n;
  };
  const auto train = counts(Part::kTrain), val = counts(Part::kValidation);
  for (int c = 0; c < 10; ++c) {
    const int64_t total = train[c] + val[c];
    EXPECT_LE(std::abs(10 * val[c] - total), 10) << "class " << c << ": " << val[c] << " of " << total;
  }
}

}  // namespace
}  // namespace polis::data
