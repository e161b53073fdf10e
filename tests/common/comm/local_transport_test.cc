// The in-process transport the roles' unit tests run on: MPI's matching
// rules on its channels, and collectives that agree bit for bit.
#include "common/comm/local_transport.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "common/comm/control.h"

namespace polis::comm {
namespace {

TEST(LocalTransport, MessagesFromOneSenderOnOneTagArriveInOrder) {
  LocalFabric fabric(2, {});
  Channel* a = fabric.transport(0)->data();
  Channel* b = fabric.transport(1)->data();
  for (int v : {1, 2, 3}) ASSERT_TRUE(a->Send(&v, sizeof(v), 1, 7).ok());
  int other = 9;
  ASSERT_TRUE(a->Send(&other, sizeof(other), 1, 8).ok());
  int got = 0;
  ASSERT_TRUE(b->Recv(&got, sizeof(got), 0, 8).ok());  // another tag overtakes
  EXPECT_EQ(got, 9);
  for (int want : {1, 2, 3}) {
    ASSERT_TRUE(b->Recv(&got, sizeof(got), kAnySource, 7).ok());
    EXPECT_EQ(got, want);
  }
}

TEST(LocalTransport, PostedReceivesCompleteWhenTheirMessageArrives) {
  LocalFabric fabric(3, {});
  Channel* c = fabric.transport(2)->data();
  float x[4] = {}, y[2] = {};
  Request reqs[2];
  ASSERT_TRUE(c->Irecv(x, sizeof(x), 0, 5, &reqs[0]).ok());
  ASSERT_TRUE(c->Irecv(y, sizeof(y), 1, 5, &reqs[1]).ok());
  bool done = true;
  ASSERT_TRUE(c->Test(reqs, 2, &done).ok());
  EXPECT_FALSE(done);
  const float from1[2] = {7, 8};
  ASSERT_TRUE(fabric.transport(1)->data()->Send(from1, sizeof(from1), 2, 5).ok());
  ASSERT_TRUE(c->Test(reqs, 2, &done).ok());
  EXPECT_FALSE(done);
  EXPECT_TRUE(reqs[0].pending());
  EXPECT_FALSE(reqs[1].pending());  // each completed request stops pending
  EXPECT_EQ(y[1], 8);
  const float from0[4] = {1, 2, 3, 4};
  Request send;
  ASSERT_TRUE(fabric.transport(0)->data()->Isend(from0, sizeof(from0), 2, 5, &send).ok());
  ASSERT_TRUE(c->Test(reqs, 2, &done).ok());
  EXPECT_TRUE(done);
  EXPECT_EQ(x[3], 4);
}

TEST(LocalTransport, AMessageLongerThanTheReceiveIsAnError) {
  LocalFabric fabric(2, {});
  const char text[] = "too long";
  ASSERT_TRUE(fabric.transport(0)->data()->Send(text, sizeof(text), 1, 1).ok());
  char small[4];
  Status st = fabric.transport(1)->data()->Recv(small, sizeof(small), 0, 1);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("does not fit"), std::string::npos) << st.ToString();
}

TEST(LocalTransport, CancelledReceivesTakeNothing) {
  LocalFabric fabric(2, {});
  Channel* b = fabric.transport(1)->data();
  int slot = 0;
  Request req;
  ASSERT_TRUE(b->Irecv(&slot, sizeof(slot), 0, 3, &req).ok());
  b->Cancel(&req, 1);
  EXPECT_FALSE(req.pending());
  int v = 5;
  ASSERT_TRUE(fabric.transport(0)->data()->Send(&v, sizeof(v), 1, 3).ok());
  EXPECT_EQ(slot, 0);
  Probed p;
  auto found = b->Probe(kAnySource, 3, &p);
  ASSERT_TRUE(found.ok());
  EXPECT_TRUE(*found);
  EXPECT_EQ(p.source, 0);
  EXPECT_EQ(p.bytes, static_cast<int64_t>(sizeof(int)));
}

TEST(LocalTransport, ControlMessagesNameTheirSender) {
  LocalFabric fabric(3, {});
  proto::ControlMessage msg;
  msg.mutable_server_step()->set_step(42);
  ASSERT_TRUE(SendControl(fabric.transport(2)->control(), 0, msg).ok());
  proto::ControlMessage got;
  int from = -1;
  ASSERT_TRUE(RecvControl(fabric.transport(0)->control(), kAnySource, &from, &got, DeadlineFromNow(), "a test").ok());
  EXPECT_EQ(from, 2);
  EXPECT_EQ(got.server_step().step(), 42);
  // The data channel is another network: nothing arrived there.
  EXPECT_EQ(TryRecvControl(fabric.transport(0)->data(), kAnySource, nullptr, &got).code(), Code::kNotFound);
  // Bytes that are not a control message are refused naming the sender.
  const char junk[] = "\xff\xff\xff";
  ASSERT_TRUE(fabric.transport(1)->control()->Send(junk, 3, 0, kTagControl).ok());
  Status st = TryRecvControl(fabric.transport(0)->control(), kAnySource, nullptr, &got);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("rank 1"), std::string::npos) << st.ToString();
}

TEST(LocalTransport, WorkersAllReduceToTheSameBits) {
  LocalFabric fabric(4, {1, 2, 3});
  EXPECT_EQ(fabric.transport(0)->WorkersCommunicator(8, {}).status().code(), Code::kFailedPrecondition);
  std::vector<std::vector<float>> data(3);
  std::vector<std::thread> threads;
  for (int w = 0; w < 3; ++w) {
    threads.emplace_back([&, w] {
      auto comm = fabric.transport(w + 1)->WorkersCommunicator(8, {});
      ASSERT_TRUE(comm.ok());
      EXPECT_EQ((*comm)->rank(), w);
      EXPECT_EQ((*comm)->size(), 3);
      data[w] = {0.1f * (w + 1), 1e8f, -1e8f, static_cast<float>(w)};
      AllreduceOptions options;
      ASSERT_TRUE((*comm)->Allreduce(data[w].data(), 4, options).ok());
      int root_value = w == 2 ? 77 : 0;
      ASSERT_TRUE((*comm)->Broadcast(&root_value, sizeof(int), 2).ok());
      EXPECT_EQ(root_value, 77);
      int mine = 10 + w, all[3] = {};
      ASSERT_TRUE((*comm)->Allgather(&mine, all, sizeof(int)).ok());
      EXPECT_EQ(all[0], 10);
      EXPECT_EQ(all[2], 12);
      ASSERT_TRUE((*comm)->Barrier().ok());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::memcmp(data[0].data(), data[1].data(), 16), 0);
  EXPECT_EQ(std::memcmp(data[0].data(), data[2].data(), 16), 0);
  EXPECT_FLOAT_EQ(data[0][0], 0.1f + 0.2f + 0.3f);
  EXPECT_EQ(data[0][3], 3.0f);
}

}  // namespace
}  // namespace polis::comm
