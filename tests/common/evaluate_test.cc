// Evaluation sums (common/evaluate.h): the confusion matrix, per-class
// accuracy, adding workers' slices, and the EvalSums a worker sends.
#include "common/evaluate.h"

#include <gtest/gtest.h>

namespace polis {
namespace {

TEST(EvalResult, PerClassAccuracyFromTheConfusionMatrix) {
  EvalResult r;
  r.samples = 6;
  r.correct = 5;
  r.confusion = {2, 1,   // class 0: 2 right, 1 taken for class 1
                 0, 3};  // class 1: all 3 right
  const auto per_class = r.PerClassAccuracy();
  ASSERT_EQ(per_class.size(), 2u);
  EXPECT_DOUBLE_EQ(per_class[0], 2.0 / 3);
  EXPECT_DOUBLE_EQ(per_class[1], 1.0);
  EvalResult none;
  EXPECT_TRUE(none.PerClassAccuracy().empty());
}

TEST(EvalResult, SlicesAddUpAndTravelAsSums) {
  EvalResult a, b;
  a.samples = 3;
  a.correct = 2;
  a.loss_sum = 1.5;
  a.confusion = {2, 1, 0, 0};
  b.samples = 2;
  b.correct = 2;
  b.loss_sum = 0.5;
  b.confusion = {0, 0, 0, 2};
  proto::EvalSums with, without;
  ToSums(b, true, &with);
  ToSums(b, false, &without);
  EXPECT_EQ(with.confusion_size(), 4);
  EXPECT_EQ(without.confusion_size(), 0);
  a.Add(FromSums(with));
  EXPECT_EQ(a.samples, 5);
  EXPECT_EQ(a.correct, 4);
  EXPECT_DOUBLE_EQ(a.loss(), 0.4);
  EXPECT_EQ(a.confusion, (std::vector<int64_t>{2, 1, 0, 2}));
  EXPECT_DOUBLE_EQ(a.accuracy(), 0.8);
}

}  // namespace
}  // namespace polis
