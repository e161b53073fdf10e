// The early-stopping rule (common/early_stopping.h) on hand-worked sequences.
#include "common/early_stopping.h"

#include <gtest/gtest.h>

#include <cmath>

namespace polis {
namespace {

proto::TrainingSpec::EarlyStopping Spec(const char* metric, bool maximize, int patience, float min_delta) {
  proto::TrainingSpec::EarlyStopping s;
  s.set_metric(metric);
  s.set_mode(maximize ? proto::TrainingSpec::EarlyStopping::MAX : proto::TrainingSpec::EarlyStopping::MIN);
  s.set_patience(patience);
  s.set_min_delta(min_delta);
  return s;
}

// val_loss 0.90 0.70 0.72 0.69 0.695 0.71, patience 2, min_delta 0.005:
// epoch 4 improves on 0.70 by 0.01 (> 0.005); epoch 5 by -0.005 (not);
// epoch 6 not: two bad epochs after epoch 4, stop after epoch 6.
TEST(EarlyStopping, MinModeWithPatienceAndMinDelta) {
  EarlyStopping es(Spec("val_loss", false, 2, 0.005f));
  const double seq[] = {0.90, 0.70, 0.72, 0.69, 0.695, 0.71};
  const bool improves[] = {true, true, false, true, false, false};
  const bool stops[] = {false, false, false, false, false, true};
  for (int e = 0; e < 6; ++e) {
    EXPECT_EQ(es.Observe(e + 1, seq[e]), improves[e]) << "epoch " << e + 1;
    EXPECT_EQ(es.ShouldStop(), stops[e]) << "epoch " << e + 1;
  }
  EXPECT_EQ(es.best_epoch(), 4);
  EXPECT_DOUBLE_EQ(es.best_value(), 0.69);
}

TEST(EarlyStopping, MaxModeAndAMarginThatIsNotEnough) {
  // val_accuracy 0.80 then 0.805, min_delta 0.01, patience 1: epoch 2
  // improves by 0.005, less than min_delta: stop after epoch 2, best epoch 1.
  EarlyStopping es(Spec("val_accuracy", true, 1, 0.01f));
  EXPECT_TRUE(es.Observe(1, 0.80));
  EXPECT_FALSE(es.ShouldStop());
  EXPECT_FALSE(es.Observe(2, 0.805));
  EXPECT_TRUE(es.ShouldStop());
  EXPECT_EQ(es.best_epoch(), 1);
}

TEST(EarlyStopping, NanNeverImprovesAndAnImprovementResetsPatience) {
  EarlyStopping es(Spec("val_loss", false, 2, 0));
  EXPECT_TRUE(es.Observe(1, 1.0));
  EXPECT_FALSE(es.Observe(2, std::nan("")));
  EXPECT_TRUE(es.Observe(3, 0.5));
  EXPECT_FALSE(es.Observe(4, 0.5));  // equal is not better
  EXPECT_FALSE(es.ShouldStop());
  EXPECT_FALSE(es.Observe(5, 0.6));
  EXPECT_TRUE(es.ShouldStop());
  EXPECT_EQ(es.best_epoch(), 3);
}

TEST(EarlyStopping, ReportedMetricsDependOnTaskAndSplit) {
  EXPECT_TRUE(IsReportedMetric("val_accuracy", false, true));
  EXPECT_FALSE(IsReportedMetric("val_accuracy", true, true));
  EXPECT_FALSE(IsReportedMetric("val_loss", false, false));
  EXPECT_TRUE(IsReportedMetric("test_loss", false, false));
  EXPECT_TRUE(IsReportedMetric("val_smape", true, true));
  EXPECT_TRUE(IsReportedMetric("train_loss", true, false));
  EXPECT_EQ(ReportedMetrics(false, true), "train_loss, val_loss, val_accuracy");
}

}  // namespace
}  // namespace polis
