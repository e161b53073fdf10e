// The stratified validation split (common/data/split.h).
#include "common/data/split.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace polis::data {
namespace {

// 1000 samples of 3 classes in proportions 50/30/20 %, interleaved.
std::vector<int32_t> Labels() {
  std::vector<int32_t> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i % 10 < 5 ? 0 : i % 10 < 8 ? 1 : 2);
  return labels;
}

std::vector<int64_t> PerClass(const std::vector<int32_t>& labels, const std::vector<int64_t>& indices) {
  std::vector<int64_t> n(3, 0);
  for (int64_t i : indices) ++n[labels[i]];
  return n;
}

TEST(StratifiedSplit, KeepsClassProportionsAndSizes) {
  const auto labels = Labels();
  const TrainValidationSplit s = StratifiedSplit(labels, 3, 100, 42);
  ASSERT_EQ(s.validation.size(), 100u);
  ASSERT_EQ(s.train.size(), 900u);
  EXPECT_EQ(PerClass(labels, s.validation), (std::vector<int64_t>{50, 30, 20}));
  EXPECT_EQ(PerClass(labels, s.train), (std::vector<int64_t>{450, 270, 180}));
}

TEST(StratifiedSplit, RemaindersGoToTheLargestFractions) {
  // 7 of 1000: quotas 3.5, 2.1, 1.4 -> 3, 2, 1 and the last to class 0.
  const auto labels = Labels();
  const TrainValidationSplit s = StratifiedSplit(labels, 3, 7, 1);
  EXPECT_EQ(PerClass(labels, s.validation), (std::vector<int64_t>{4, 2, 1}));
}

TEST(StratifiedSplit, DisjointFromTrainAndCoveringEverySample) {
  const auto labels = Labels();
  const TrainValidationSplit s = StratifiedSplit(labels, 3, 250, 7);
  std::set<int64_t> all(s.train.begin(), s.train.end());
  for (int64_t i : s.validation) EXPECT_TRUE(all.insert(i).second) << i << " is in both parts";
  EXPECT_EQ(all.size(), labels.size());
  EXPECT_TRUE(std::is_sorted(s.train.begin(), s.train.end()));
  EXPECT_TRUE(std::is_sorted(s.validation.begin(), s.validation.end()));
}

TEST(StratifiedSplit, DeterministicBySeedAndDifferentAcrossSeeds) {
  const auto labels = Labels();
  const auto a = StratifiedSplit(labels, 3, 100, 42), b = StratifiedSplit(labels, 3, 100, 42);
  const auto c = StratifiedSplit(labels, 3, 100, 43);
  EXPECT_EQ(a.validation, b.validation);
  EXPECT_EQ(a.train, b.train);
  EXPECT_NE(a.validation, c.validation);
  // Not simply the first samples of each class.
  EXPECT_NE(a.validation.back(), 99);
}

TEST(StratifiedSplit, EmptyAndWholeSplits) {
  const auto labels = Labels();
  EXPECT_TRUE(StratifiedSplit(labels, 3, 0, 42).validation.empty());
  EXPECT_EQ(StratifiedSplit(labels, 3, 0, 42).train.size(), 1000u);
  EXPECT_EQ(StratifiedSplit(labels, 3, 1000, 42).validation.size(), 1000u);
  EXPECT_TRUE(StratifiedSplit({}, 3, 5, 42).validation.empty());
}

TEST(StratifiedSplit, ValidationCountFromFractionOrSize) {
  proto::DatasetSpec d;
  EXPECT_EQ(ValidationCount(d, 1000), 0);
  d.set_validation_fraction(0.1f);
  EXPECT_EQ(ValidationCount(d, 1000), 100);
  EXPECT_EQ(ValidationCount(d, 6), 1);  // 0.6 rounds to 1
  d.clear_validation_fraction();
  d.set_validation_size(250);
  EXPECT_EQ(ValidationCount(d, 1000), 250);
}

}  // namespace
}  // namespace polis::data
