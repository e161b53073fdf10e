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

}  // namespace
}  // namespace polis::data
