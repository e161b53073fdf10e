// What a resume may change (common/resume.h), and checkpoints whose shards
// do not tile the parameters (common/checkpoint.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <google/protobuf/text_format.h>

#include <functional>

#include "common/checkpoint.h"
#include "common/fs.h"
#include "common/job_spec.h"
#include "common/resume.h"

namespace polis {
namespace {

proto::JobSpec Seed() {
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  EXPECT_TRUE(job.ok()) << job.status().ToString();
  return job->spec;
}

nn::Model Build(const proto::JobSpec& spec) {
  auto m = nn::Model::Build(spec.model(), {1, 28, 28});
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::move(*m);
}

SavedTraining Saved(const proto::JobSpec& spec) {
  SavedTraining s;
  s.what = "checkpoint 'x'";
  s.has_job = true;
  s.job = spec;
  s.model_sha256 = ModelLayoutSha256(Build(spec));
  s.parameter_count = Build(spec).parameter_count();
  return s;
}

TEST(Resume, SafeFieldsMayChange) {
  const proto::JobSpec a = Seed();
  proto::JobSpec b = a;
  b.mutable_training()->set_epochs(9);
  b.mutable_sync()->set_servers(3);
  b.mutable_registry()->set_root("/elsewhere");
  b.mutable_registry()->set_url("http://127.0.0.1:1");
  b.mutable_dataset()->set_dir("/my/copy");
  b.mutable_training()->set_keep_checkpoints(7);
  EXPECT_EQ(FirstUnsafeDifference(a, b), "");
  EXPECT_TRUE(CheckResume(Saved(a), b, Build(b), "job.pbtxt").ok());
}

// A DP-SGD job's sampling rate, noise and ε are planned for its epochs and
// workers: a resume keeps both.
TEST(Resume, DpSgdJobKeepsItsEpochsAndWorkers) {
  proto::JobSpec a = Seed();
  auto* p = a.mutable_privacy();
  p->set_target_epsilon(3);
  p->set_delta(1e-5);
  p->set_max_grad_norm(1);
  SavedTraining saved = Saved(a);
  saved.workers = 4;
  EXPECT_TRUE(CheckResume(saved, a, Build(a), "job.pbtxt", 4).ok());
  EXPECT_TRUE(CheckResume(saved, a, Build(a), "job.pbtxt").ok());  // workers not known
  proto::JobSpec longer = a;
  longer.mutable_training()->set_epochs(a.training().epochs() + 5);
  Status st = CheckResume(saved, longer, Build(longer), "job.pbtxt", 4);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("field 'training.epochs'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("DP-SGD"), std::string::npos) << st.message();
  st = CheckResume(saved, a, Build(a), "job.pbtxt", 2);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("trained on 4 workers, this run has 2"), std::string::npos) << st.message();
  // The privacy block itself may not change.
  proto::JobSpec looser = a;
  looser.mutable_privacy()->set_target_epsilon(8);
  st = CheckResume(saved, looser, Build(looser), "job.pbtxt", 4);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("privacy.target_epsilon"), std::string::npos) << st.message();
}

TEST(Resume, UnsetAndExplicitDefaultAreTheSame) {
  proto::JobSpec a = Seed(), b = Seed();
  a.mutable_optimizer()->clear_momentum();
  b.mutable_optimizer()->set_momentum(0);
  b.mutable_sync()->set_staleness(2);
  EXPECT_EQ(FirstUnsafeDifference(a, b), "");
}

TEST(Resume, EachUnsafeChangeIsNamedWithBothValues) {
  struct Case {
    const char* field;
    std::function<void(proto::JobSpec*)> edit;
  };
  const std::vector<Case> cases = {
      {"optimizer.learning_rate", [](proto::JobSpec* j) { j->mutable_optimizer()->set_learning_rate(0.01f); }},
      {"training.seed", [](proto::JobSpec* j) { j->mutable_training()->set_seed(7); }},
      {"training.batch_size", [](proto::JobSpec* j) { j->mutable_training()->set_batch_size(64); }},
      {"sync.mode", [](proto::JobSpec* j) { j->mutable_sync()->set_mode(proto::SyncSpec::ALLREDUCE); }},
      {"dataset.train_limit", [](proto::JobSpec* j) { j->mutable_dataset()->set_train_limit(100); }},
      {"model.layer[6].dense_param.units",
       [](proto::JobSpec* j) { j->mutable_model()->mutable_layer(6)->mutable_dense_param()->set_units(32); }},
      {"model.layer", [](proto::JobSpec* j) { j->mutable_model()->mutable_layer()->RemoveLast(); }},
  };
  const proto::JobSpec a = Seed();
  for (const Case& c : cases) {
    proto::JobSpec b = a;
    c.edit(&b);
    const std::string diff = FirstUnsafeDifference(a, b);
    EXPECT_NE(diff.find(std::string("'") + c.field + "'"), std::string::npos) << c.field << ": " << diff;
    EXPECT_NE(diff.find("the checkpoint was trained with"), std::string::npos) << diff;
  }
}

// Even without the job text (checkpoints written before it was kept), the
// parameter count and the layout hash refuse another model.
TEST(Resume, ParameterCountAndLayoutAreChecked) {
  const proto::JobSpec a = Seed();
  proto::JobSpec smaller = a, reordered = a;
  smaller.mutable_model()->mutable_layer(6)->mutable_dense_param()->set_units(32);
  smaller.mutable_model()->clear_expect_parameters();
  SavedTraining saved = Saved(a);
  saved.has_job = false;
  Status st = CheckResume(saved, smaller, Build(smaller), "job.pbtxt");
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("93322"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'model.layer'"), std::string::npos) << st.message();
  // Same count, other layout: a layer renamed.
  reordered.mutable_model()->mutable_layer(7)->set_name("head");
  EXPECT_NE(ModelLayoutSha256(Build(a)), ModelLayoutSha256(Build(reordered)));
  st = CheckResume(saved, reordered, Build(reordered), "job.pbtxt");
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
}

class Tiling : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/polis-tiling-XXXXXX";
    run_ = mkdtemp(tmpl);
    dir_ = run_ + "/checkpoints/" + CheckpointDirName(5, true);
    ASSERT_TRUE(MakeDirectories(dir_).ok());
  }
  void TearDown() override { std::system(("rm -rf " + run_).c_str()); }
  // A shard file holding `count` values labelled as [begin, end).
  CheckpointManifest::Shard Shard(int s, int64_t begin, int64_t end, int64_t count) {
    ShardFile f;
    f.server = s;
    f.begin = begin;
    f.end = end;
    f.params.assign(count, 1.f);
    f.state = {{"m", std::vector<float>(count, 0.f)}};
    const std::string file = "server-" + std::to_string(s) + ".shard";
    EXPECT_TRUE(WriteShardFile(dir_ + "/" + file, f, "abc").ok());
    return {s, begin, end, file, *Sha256File(dir_ + "/" + file)};
  }
  Status WriteAndRead(int64_t parameters, std::vector<CheckpointManifest::Shard> shards) {
    CheckpointManifest m;
    m.step = 5;
    m.epoch_complete = true;
    m.workers = 1;
    m.servers = static_cast<int>(shards.size());
    m.parameter_count = parameters;
    m.shards = std::move(shards);
    EXPECT_TRUE(WriteManifest(dir_, m).ok());
    auto read = ReadManifest(dir_);
    if (!read.ok()) return read.status();
    return LoadFullState(*read).status();
  }
  std::string run_, dir_;
};

TEST_F(Tiling, ExactTilingLoads) { EXPECT_TRUE(WriteAndRead(10, {Shard(0, 0, 6, 6), Shard(1, 6, 10, 4)}).ok()); }

TEST_F(Tiling, OverlapGapOrOverrunIsDataLoss) {
  EXPECT_EQ(WriteAndRead(10, {Shard(0, 0, 6, 6), Shard(1, 4, 10, 6)}).code(), Code::kDataLoss);  // overlap
  EXPECT_EQ(WriteAndRead(10, {Shard(0, 0, 4, 4), Shard(1, 6, 12, 6)}).code(), Code::kDataLoss);  // gap, overrun
  EXPECT_EQ(WriteAndRead(10, {Shard(0, 0, 12, 12)}).code(), Code::kDataLoss);                   // past the end
}

// A shard whose file holds more values than its range claims (what a
// larger model's checkpoint read by a smaller one looked like).
TEST_F(Tiling, ShardHoldingMoreThanItsRangeIsDataLoss) {
  Status st = WriteAndRead(10, {Shard(0, 0, 6, 6), Shard(1, 6, 10, 9)});
  EXPECT_EQ(st.code(), Code::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("server-1.shard"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace polis
