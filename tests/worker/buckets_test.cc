#include <gtest/gtest.h>

#include <google/protobuf/text_format.h>

#include "common/job_spec.h"
#include "worker/gradient_sync.h"

namespace polis::worker {
namespace {

nn::Model SeedModel() {
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  EXPECT_TRUE(job.ok());
  auto m = nn::Model::Build(job->spec.model(), {1, 28, 28});
  EXPECT_TRUE(m.ok());
  return std::move(*m);
}

// Buckets tile [0, P] (P = the count slot) from the top down, and a bucket
// is never marked ready before every layer it touches has finished.
void CheckTiling(const nn::Model& m, const std::vector<Bucket>& b) {
  const int64_t P = m.parameter_count();
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.front().end, P + kGradientExtraSlots);
  EXPECT_EQ(b.back().begin, 0);
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_LT(b[i].begin, b[i].end);
    if (i > 0) {
      EXPECT_EQ(b[i].end, b[i - 1].begin);
      EXPECT_LE(b[i].ready_after_layer, b[i - 1].ready_after_layer);
    }
    for (size_t l = 0; l < m.layers().size(); ++l) {
      const auto& L = m.layers()[l];
      bool touches = L.param_count > 0 && L.param_offset < b[i].end &&
                     L.param_offset + L.param_count > b[i].begin;
      if (touches) EXPECT_LE(b[i].ready_after_layer, static_cast<int>(l)) << "bucket " << i << " layer " << l;
    }
  }
}

TEST(PlanBuckets, OnePerLayer) {
  nn::Model m = SeedModel();
  auto b = PlanBuckets(m, 0);
  CheckTiling(m, b);
  EXPECT_EQ(b.size(), 5u);  // five layers with parameters
}

TEST(PlanBuckets, DefaultSizeGroupsSmallLayers) {
  nn::Model m = SeedModel();
  auto b = PlanBuckets(m, 65536);
  CheckTiling(m, b);
  EXPECT_LT(b.size(), 8u);
}

TEST(PlanBuckets, SmallBucketsSplitLayers) {
  nn::Model m = SeedModel();
  auto b = PlanBuckets(m, 4096);  // 1024 floats: every conv and dense layer is split
  CheckTiling(m, b);
  for (const auto& k : b) EXPECT_LE(k.end - k.begin, 1024);
  EXPECT_GE(b.size(), 93323u / 1024);
}

TEST(PlanBuckets, OneBucketForEverything) {
  nn::Model m = SeedModel();
  auto b = PlanBuckets(m, int64_t{1} << 40);
  CheckTiling(m, b);
  EXPECT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].ready_after_layer, 0);
}

}  // namespace
}  // namespace polis::worker
