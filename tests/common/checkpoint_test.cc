#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "common/checkpoint.h"
#include "common/fs.h"

namespace polis {
namespace {

using Range = data::ShardPlanner::Range;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/polis-ckpt-XXXXXX";
    run_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::system(("rm -rf " + run_).c_str()); }

  // Writes a complete 2-server checkpoint of a 10-parameter model at `step`.
  std::string Write(int64_t step, float base) {
    const std::string dir = run_ + "/checkpoints/" + CheckpointDirName(step, false);
    EXPECT_TRUE(MakeDirectories(dir).ok());
    CheckpointManifest m;
    m.step = step;
    m.epoch = 1;
    m.workers = 2;
    m.servers = 2;
    m.parameter_count = 10;
    m.job_sha256 = "abc";
    m.consumed = {{0, 64}, {128, 160}};
    m.pending = {{{64, 80}}, {{160, 170}, {96, 128}}};
    for (int s = 0; s < 2; ++s) {
      ShardFile f;
      f.server = s;
      f.begin = s * 6;
      f.end = s == 0 ? 6 : 10;
      f.step = step;
      f.optimizer_steps = step;
      for (int64_t i = f.begin; i < f.end; ++i) f.params.push_back(base + i);
      f.state = {{"m", std::vector<float>(f.end - f.begin, 0.5f)}, {"v", std::vector<float>(f.end - f.begin, 0.25f)}};
      std::string file = "server-" + std::to_string(s) + ".shard";
      EXPECT_TRUE(WriteShardFile(dir + "/" + file, f, "abc").ok());
      m.shards.push_back({s, f.begin, f.end, file, *Sha256File(dir + "/" + file)});
    }
    EXPECT_TRUE(WriteManifest(dir, m).ok());
    return dir;
  }
  std::string run_;
};

TEST_F(CheckpointTest, RoundTripIsBitExact) {
  Write(10, 0.1f);
  std::vector<std::string> skipped;
  auto m = FindLatestCheckpoint(run_, &skipped);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->step, 10);
  EXPECT_EQ(m->consumed.size(), 2u);
  // Each worker's pending positions come back in the order they were granted.
  ASSERT_EQ(m->pending.size(), 2u);
  ASSERT_EQ(m->pending[1].size(), 2u);
  EXPECT_EQ(m->pending[0][0].begin, 64);
  EXPECT_EQ(m->pending[1][0].begin, 160);
  EXPECT_EQ(m->pending[1][1].end, 128);
  EXPECT_TRUE(CheckPositions(*m, 200).ok());
  auto full = LoadFullState(*m);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(full->params[i], 0.1f + i);
  ASSERT_EQ(full->state.size(), 2u);
  EXPECT_EQ(full->state[1].first, "v");
  EXPECT_EQ(full->state[1].second[9], 0.25f);
  EXPECT_EQ(full->optimizer_steps, 10);
}

TEST_F(CheckpointTest, CorruptNewestFallsBackToThePreviousComplete) {
  Write(10, 0.0f);
  const std::string newest = Write(20, 100.0f);
  {
    std::fstream f(newest + "/server-1.shard", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x55');
  }
  std::vector<std::string> skipped;
  auto m = FindLatestCheckpoint(run_, &skipped);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->step, 10);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("step-000000020"), std::string::npos) << skipped[0];
  EXPECT_NE(skipped[0].find("checksum mismatch"), std::string::npos) << skipped[0];
}

TEST_F(CheckpointTest, PartialCheckpointWithoutManifestIsSkipped) {
  Write(10, 0.0f);
  const std::string partial = Write(20, 1.0f);
  std::remove((partial + "/manifest.json").c_str());
  std::ofstream(partial + "/manifest.json") << "{\"manifest\": {\"step\": 2";  // torn write
  std::vector<std::string> skipped;
  auto m = FindLatestCheckpoint(run_, &skipped);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->step, 10);
  EXPECT_NE(skipped.at(0).find("not a checkpoint manifest"), std::string::npos) << skipped[0];
}

TEST_F(CheckpointTest, NoCheckpointIsNotFound) {
  std::vector<std::string> skipped;
  EXPECT_EQ(FindLatestCheckpoint(run_, &skipped).status().code(), Code::kNotFound);
}

TEST_F(CheckpointTest, PruneKeepsTheNewest) {
  Write(10, 0);
  Write(20, 0);
  Write(30, 0);
  PruneCheckpoints(run_, 2);
  EXPECT_FALSE(PathExists(run_ + "/checkpoints/" + CheckpointDirName(10, false)));
  EXPECT_TRUE(PathExists(run_ + "/checkpoints/" + CheckpointDirName(30, false)));
}

TEST(Ranges, MergeAndComplement) {
  auto m = MergeRanges({{10, 20}, {0, 5}, {15, 30}, {5, 7}, {40, 40}});
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].begin, 0);
  EXPECT_EQ(m[0].end, 7);
  EXPECT_EQ(m[1].begin, 10);
  EXPECT_EQ(m[1].end, 30);
  auto c = Complement(m, 50);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].begin, 7);
  EXPECT_EQ(c[0].end, 10);
  EXPECT_EQ(c[1].begin, 30);
  EXPECT_EQ(c[1].end, 50);
}

TEST(Ranges, CheckPositionsRefusesOverlapsAndOutOfEpoch) {
  CheckpointManifest m;
  m.dir = "RUN/checkpoints/step-000000010";
  m.consumed = {{0, 10}};
  m.pending = {{{10, 20}}, {{30, 40}}};
  EXPECT_TRUE(CheckPositions(m, 40).ok());
  Status past = CheckPositions(m, 35);
  EXPECT_FALSE(past.ok());
  EXPECT_NE(past.message().find("[30, 40)"), std::string::npos) << past.message();
  m.pending[1] = {{5, 12}};  // trained and pending at once
  EXPECT_FALSE(CheckPositions(m, 40).ok());
}

TEST(ShardPlannerResume, HandsOutOnlyTheRemaining) {
  data::ShardPlanner p(100, 8);
  p.SetRemaining(3, {{10, 20}, {50, 53}});
  std::vector<Range> got;
  for (auto r = p.Next(3); r.end > r.begin; r = p.Next(3)) got.push_back(r);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].begin, 10);
  EXPECT_EQ(got[0].end, 18);
  EXPECT_EQ(got[1].end, 20);
  EXPECT_EQ(got[2].begin, 50);
  EXPECT_EQ(p.Next(4).begin, 0);  // later epochs are whole
}

}  // namespace
}  // namespace polis
