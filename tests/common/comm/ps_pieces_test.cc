#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "common/comm/ps_pieces.h"
#include "common/job_spec.h"

namespace polis::comm {
namespace {

nn::Model SeedModel() {
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  EXPECT_TRUE(job.ok());
  auto m = nn::Model::Build(job->spec.model(), {1, 28, 28});
  EXPECT_TRUE(m.ok());
  return std::move(*m);
}

// Pieces tile the buffer, each lies in one server's range, slots number a
// server's pieces 0..m-1, a piece is ready no earlier than every layer it
// touches, and the list is in the order backward produces them.
void CheckPlan(const std::vector<LayerSpan>& layers, const std::vector<KeyRange>& ranges,
               const std::vector<Piece>& pieces) {
  ASSERT_FALSE(pieces.empty());
  std::vector<Piece> sorted = pieces;
  std::sort(sorted.begin(), sorted.end(), [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
  EXPECT_EQ(sorted.front().begin, 0);
  EXPECT_EQ(sorted.back().end, ranges.back().end);
  for (size_t i = 1; i < sorted.size(); ++i) EXPECT_EQ(sorted[i].begin, sorted[i - 1].end);
  std::vector<std::set<int>> slots(ranges.size());
  for (size_t k = 0; k < pieces.size(); ++k) {
    const Piece& p = pieces[k];
    EXPECT_LT(p.begin, p.end);
    EXPECT_GE(p.begin, ranges[p.server].begin);
    EXPECT_LE(p.end, ranges[p.server].end);
    EXPECT_TRUE(slots[p.server].insert(p.slot).second) << "slot " << p.slot << " twice";
    if (k > 0) EXPECT_LE(p.first_layer, pieces[k - 1].first_layer);
    for (size_t l = 0; l < layers.size(); ++l) {
      const bool touches = layers[l].count > 0 && layers[l].offset < p.end && layers[l].offset + layers[l].count > p.begin;
      if (touches) {
        EXPECT_LE(p.first_layer, static_cast<int>(l));
        EXPECT_GE(p.last_layer, static_cast<int>(l));
      }
    }
  }
  for (const auto& s : slots)
    if (!s.empty()) EXPECT_EQ(*s.rbegin(), static_cast<int>(s.size()) - 1);
}

TEST(PlanPieces, SeedModelEverySettingAndServerCount) {
  nn::Model m = SeedModel();
  const auto layers = LayerSpans(m);
  for (int servers : {1, 2, 3, 5}) {
    for (int64_t bytes : {-1, 0, 1, 4096, 65536, 1 << 20}) {
      SCOPED_TRACE(::testing::Message() << servers << " servers, " << bytes << " bytes");
      const auto ranges = PartitionByBytes(m.parameter_count(), servers);
      CheckPlan(layers, ranges, PlanPieces(layers, ranges, bytes));
    }
  }
}

TEST(PlanPieces, OnePerLayerOnePerServerAndGrouped) {
  nn::Model m = SeedModel();
  // Five layers with parameters, one server.
  EXPECT_EQ(PlanPieces(m, 1, 0).size(), 5u);
  EXPECT_EQ(PlanPieces(m, 1, -1).size(), 1u);
  EXPECT_EQ(PlanPieces(m, 3, -1).size(), 3u);
  // 64 KiB groups the 2.6 KB output layer with the dense layer before it
  // and leaves the first convolution (1.3 KB) on its own at the end.
  auto p = PlanPieces(m, 1, 65536);
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0].first_layer, 6);
  EXPECT_EQ(p[0].last_layer, 7);
  EXPECT_EQ(p.back().first_layer, 0);
  // Everything in one group when the threshold exceeds the model.
  EXPECT_EQ(PlanPieces(m, 2, 1 << 20).size(), 2u);
}

TEST(PlanPieces, LayerAcrossTwoServersBecomesTwoPieces) {
  // 760 + 630 + 155 floats; two servers cut at 768, inside the second layer.
  const std::vector<LayerSpan> layers = {{0, 760}, {760, 630}, {1390, 155}};
  const auto ranges = PartitionByBytes(1545, 2);
  ASSERT_EQ(ranges[0].end, 768);
  auto p = PlanPieces(layers, ranges, 0);
  CheckPlan(layers, ranges, p);
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[1].first_layer, 1);
  EXPECT_EQ(p[2].first_layer, 1);
  EXPECT_EQ(p[1].server, 1);
  EXPECT_EQ(p[1].begin, 768);
  EXPECT_EQ(p[2].server, 0);
  EXPECT_EQ(p[2].begin, 760);
  EXPECT_EQ(p[2].end, 768);
}

TEST(PlanPieces, TagSpaceIsNeverExceeded) {
  // 20000 one-float layers: one piece per layer would need 20000 tags.
  std::vector<LayerSpan> layers;
  for (int i = 0; i < 20000; ++i) layers.push_back({i, 1});
  const auto ranges = PartitionByBytes(20000, 1);
  auto p = PlanPieces(layers, ranges, 0);
  EXPECT_LE(p.size(), static_cast<size_t>(kMaxPiecesPerServer));
  CheckPlan(layers, ranges, p);
}

}  // namespace
}  // namespace polis::comm
