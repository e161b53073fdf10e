// What a rank accepts from another: in-range messages pass, and each
// out-of-range field is refused with the sender's rank and the field named.
#include "common/comm/wire_checks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace polis::comm {
namespace {

// 3 epochs of 100 samples, 2 workers, 2 servers, 1000 parameters.
const WireLimits kLimits{3, 100, 2, 2, 1000};

proto::ControlMessage Grant(int epoch, int64_t begin, int64_t end) {
  proto::ControlMessage m;
  auto* g = m.mutable_shard_grant();
  g->set_epoch(epoch);
  g->set_begin(begin);
  g->set_end(end);
  return m;
}

proto::ControlMessage Saved(bool replica) {
  proto::ControlMessage m;
  auto* s = m.mutable_shard_saved();
  s->set_step(10);
  s->set_epoch(1);
  s->set_begin(0);
  s->set_end(replica ? 1000 : 500);
  if (replica) {
    s->set_worker(1);
    s->add_consumed(40);
  } else {
    s->set_server(0);
    s->add_consumed(40);
    s->add_consumed(30);
    s->set_path("server-0.shard");
  }
  return m;
}

void ExpectRefused(const proto::ControlMessage& m, const std::string& field) {
  Status st = CheckControlMessage(m, 7, kLimits);
  ASSERT_FALSE(st.ok()) << m.ShortDebugString();
  EXPECT_EQ(st.code(), Code::kRemote);
  EXPECT_NE(st.message().find("rank 7"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(field), std::string::npos) << st.message();
}

TEST(WireChecks, InRangeMessagesPass) {
  EXPECT_TRUE(CheckControlMessage(Grant(2, 0, 100), 0, kLimits).ok());
  EXPECT_TRUE(CheckControlMessage(Grant(0, 100, 100), 0, kLimits).ok());  // epoch exhausted
  EXPECT_TRUE(CheckControlMessage(Saved(true), 3, kLimits).ok());
  EXPECT_TRUE(CheckControlMessage(Saved(false), 1, kLimits).ok());
  proto::ControlMessage p;
  p.mutable_progress()->set_loss(std::nanf(""));  // a diverged worker reports NaN
  EXPECT_TRUE(CheckControlMessage(p, 3, kLimits).ok());
}

TEST(WireChecks, ShardGrantOutsideTheEpochIsRefused) {
  ExpectRefused(Grant(3, 0, 10), "epoch");
  ExpectRefused(Grant(0, -1, 10), "begin");
  ExpectRefused(Grant(0, 0, 101), "end");
  ExpectRefused(Grant(0, 50, 40), "begin = 50 > end = 40");
}

TEST(WireChecks, CheckpointReportsAreBounded) {
  auto m = Saved(false);
  m.mutable_shard_saved()->set_end(1001);
  ExpectRefused(m, "end");
  m = Saved(false);
  m.mutable_shard_saved()->set_server(2);
  ExpectRefused(m, "server");
  m = Saved(false);
  m.mutable_shard_saved()->add_consumed(1);
  ExpectRefused(m, "3 consumed counts, 2 expected");
  m = Saved(false);
  m.mutable_shard_saved()->set_consumed(0, 101);
  ExpectRefused(m, "consumed");
  for (const char* path : {"../x", "", "..", "a/b"}) {
    m = Saved(false);
    m.mutable_shard_saved()->set_path(path);
    ExpectRefused(m, "not a file name");
  }
  m = Saved(true);
  m.mutable_shard_saved()->set_worker(2);
  ExpectRefused(m, "worker");
}

TEST(WireChecks, ProgressAndReportsAreFiniteAndCounted) {
  proto::ControlMessage m;
  m.mutable_progress()->set_compute_seconds(-1);
  ExpectRefused(m, "compute_seconds");
  m.Clear();
  m.mutable_progress()->set_loss(INFINITY);
  ExpectRefused(m, "loss");
  m.Clear();
  m.mutable_epoch_report()->set_train_samples(10);
  m.mutable_epoch_report()->set_train_correct(11);
  ExpectRefused(m, "train_correct");
  m.Clear();
  ExpectRefused(m, "no body");
}

TEST(WireChecks, DecodeRefusesBytesThatDoNotParse) {
  proto::ControlMessage m;
  Status st = DecodeControl(std::string("\xff\xff\xff", 3), 5, &m);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("rank 5"), std::string::npos);
  const std::string bytes = Grant(1, 2, 3).SerializeAsString();
  ASSERT_TRUE(DecodeControl(bytes, 5, &m).ok());
  EXPECT_EQ(m.shard_grant().end(), 3);
}

TEST(WireChecks, PushAndPullHeaders) {
  PushHeader push{};
  push.step = 4;
  push.samples = 32;
  push.epoch = 2;
  push.consumed = 64;
  EXPECT_TRUE(CheckPushHeader(push, 3, kLimits).ok());
  push.flags = kPushEpochEnd;
  EXPECT_TRUE(CheckPushHeader(push, 3, kLimits).ok());
  std::vector<std::pair<std::function<void(PushHeader&)>, std::string>> bad = {
      {[](PushHeader& h) { h.samples = 101; }, "samples"},
      {[](PushHeader& h) { h.epoch = 3; }, "epoch"},
      {[](PushHeader& h) { h.consumed = -1; }, "consumed"},
      {[](PushHeader& h) { h.step = -2; }, "step"},
      {[](PushHeader& h) { h.flags = 4; }, "unknown flags"},
  };
  for (auto& [mutate, field] : bad) {
    PushHeader h = push;
    mutate(h);
    Status st = CheckPushHeader(h, 3, kLimits);
    ASSERT_FALSE(st.ok()) << field;
    EXPECT_NE(st.message().find(field), std::string::npos) << st.message();
  }
  PullHeader pull{};
  pull.step = 5;
  pull.total_samples = 64;
  pull.flags = kPullEpochDone | kPullCheckpoint;
  EXPECT_TRUE(CheckPullHeader(pull, 1).ok());
  pull.flags = 8;
  EXPECT_FALSE(CheckPullHeader(pull, 1).ok());
  pull.flags = 0;
  pull.total_samples = -1;
  EXPECT_FALSE(CheckPullHeader(pull, 1).ok());
}

}  // namespace
}  // namespace polis::comm
