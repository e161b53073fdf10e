// The checks of received evaluation messages (common/comm/wire_checks.h):
// confusion matrices only where expected, of outputs² counts that add up to
// the samples; epoch verdicts within the job's epochs.
#include "common/comm/wire_checks.h"

#include <gtest/gtest.h>

namespace polis::comm {
namespace {

WireLimits Limits() {
  WireLimits l;
  l.epochs = 3;
  l.samples_per_epoch = 100;
  l.workers = 2;
  l.servers = 1;
  l.parameter_count = 10;
  l.outputs = 2;
  return l;
}

proto::ControlMessage Final(std::initializer_list<int64_t> confusion, int64_t samples) {
  proto::ControlMessage m;
  auto* t = m.mutable_final_evaluation()->mutable_test();
  t->set_samples(samples);
  t->set_correct(3);
  for (int64_t v : confusion) t->add_confusion(v);
  return m;
}

TEST(WireChecks, AFinalEvaluationsConfusionMatrixMustCountItsSamples) {
  EXPECT_TRUE(CheckControlMessage(Final({2, 0, 1, 1}, 4), 2, Limits()).ok());
  Status st = CheckControlMessage(Final({2, 0, 1, 2}, 4), 2, Limits());
  EXPECT_EQ(st.code(), Code::kRemote);
  EXPECT_NE(st.message().find("counting 5 samples of 4"), std::string::npos) << st.ToString();
  st = CheckControlMessage(Final({2, 0, 1}, 3), 2, Limits());
  EXPECT_NE(st.message().find("3 counts where 4 were expected"), std::string::npos) << st.ToString();
  st = CheckControlMessage(Final({5, -1, 0, 0}, 4), 2, Limits());
  EXPECT_FALSE(st.ok());
}

TEST(WireChecks, EpochReportsCarryNoConfusionMatrixAndVerdictsStayInTheJob) {
  proto::ControlMessage m;
  m.mutable_epoch_report()->set_epoch(1);
  m.mutable_epoch_report()->mutable_eval()->set_samples(4);
  EXPECT_TRUE(CheckControlMessage(m, 2, Limits()).ok());
  for (int64_t v : {2, 0, 1, 1}) m.mutable_epoch_report()->mutable_eval()->add_confusion(v);
  EXPECT_FALSE(CheckControlMessage(m, 2, Limits()).ok());
  m.Clear();
  m.mutable_epoch_verdict()->set_epoch(3);
  Status st = CheckControlMessage(m, 0, Limits());
  EXPECT_NE(st.message().find("epoch = 3"), std::string::npos) << st.ToString();
}

TEST(WireChecks, PushHeaderGradNormMustBeFiniteAndNonNegative) {
  PushHeader h;
  h.grad_norm = 2.5;
  EXPECT_TRUE(CheckPushHeader(h, 3, Limits()).ok());
  h.grad_norm = -1;
  EXPECT_FALSE(CheckPushHeader(h, 3, Limits()).ok());
  h.grad_norm = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(CheckPushHeader(h, 3, Limits()).ok());
}

}  // namespace
}  // namespace polis::comm
