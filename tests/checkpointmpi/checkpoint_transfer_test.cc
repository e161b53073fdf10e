// Checkpoint data over MPI (common/checkpoint_transfer.h) under real
// mpirun, 3 ranks: rank 0 stands in for the coordinator and is the only one
// that touches the checkpoint folder; ranks 1 and 2 send shards, take their
// part of a checkpoint at resume, and take parameters to evaluate. Chunks
// far smaller than the messages make every transfer many chunks long.
//
//   mpirun -np 3 polis_checkpoint_mpi_tests
#include <gtest/gtest.h>
#include <mpi.h>
#include <stdlib.h>

#include <google/protobuf/text_format.h>

#include "common/checkpoint_transfer.h"
#include "common/comm/control.h"
#include "common/comm/mpi_transport.h"
#include "common/comm/key_ranges.h"
#include "common/fs.h"
#include "tests/mpi/mpi_gtest_main.h"

namespace polis {
namespace {

// Every message of these tests travels on MPI_COMM_WORLD.
comm::Channel* World() {
  static std::unique_ptr<comm::Channel> world = comm::MakeMpiChannel(MPI_COMM_WORLD);
  return world.get();
}

constexpr int64_t kChunk = 7;  // bytes: every message takes many chunks

int Rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// A folder made by rank 0, its name known to every rank.
std::string SharedName(const std::string& prefix) {
  std::string dir;
  if (Rank() == 0) {
    std::string tmpl = "/tmp/polis-" + prefix + "-XXXXXX";
    dir = mkdtemp(tmpl.data());
  }
  int len = static_cast<int>(dir.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  dir.resize(len);
  MPI_Bcast(dir.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  return dir;
}

float Value(int64_t i, int salt) { return static_cast<float>((i * 7 + salt) % 23) * 0.25f - 2.0f; }

ShardFile MakeShard(int server, int64_t begin, int64_t end, int64_t step) {
  ShardFile s;
  s.server = server;
  s.begin = begin;
  s.end = end;
  s.step = step;
  s.epoch = 1;
  s.optimizer_steps = step;
  for (int64_t i = begin; i < end; ++i) s.params.push_back(Value(i, 0));
  std::vector<float> m;
  for (int64_t i = begin; i < end; ++i) m.push_back(Value(i, 5));
  s.state.emplace_back("momentum", m);
  return s;
}

TEST(CheckpointTransfer, BlobsOfEverySizeArriveWhole) {
  for (int64_t size : {0, 1, 6, 7, 8, 1000}) {
    if (Rank() == 0) {
      for (int from = 1; from <= 2; ++from) {
        auto got = RecvBlob(World(), from, kTagShardBytes, 1000, comm::DeadlineFromNow(), "a blob", kChunk);
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        ASSERT_EQ(static_cast<int64_t>(got->size()), size);
        for (int64_t i = 0; i < size; ++i) ASSERT_EQ((*got)[i], static_cast<char>('a' + (i + from) % 26));
      }
    } else {
      std::string bytes;
      for (int64_t i = 0; i < size; ++i) bytes.push_back(static_cast<char>('a' + (i + Rank()) % 26));
      Status st = SendBlob(World(), 0, kTagShardBytes, bytes, comm::DeadlineFromNow(), "rank 0", kChunk);
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(CheckpointTransfer, ABlobAboveTheLimitIsRefusedBeforeItIsTaken) {
  if (Rank() == 0) {
    auto got = RecvBlob(World(), 1, kTagEvalParams, 10, comm::DeadlineFromNow(), "parameters", kChunk);
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), Code::kDataLoss);
    EXPECT_NE(got.status().message().find("parameters from rank 1: 11 bytes announced; at most 10"), std::string::npos)
        << got.status().ToString();
    // Drain the chunks so the sender finishes.
    std::string sink(11, '\0');
    MPI_Recv(sink.data(), 7, MPI_BYTE, 1, kTagEvalParams, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Recv(sink.data(), 4, MPI_BYTE, 1, kTagEvalParams, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  } else if (Rank() == 1) {
    Status st = SendBlob(World(), 0, kTagEvalParams, std::string(11, 'x'), comm::DeadlineFromNow(), "rank 0",
                         kChunk);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Two senders' shards, written by rank 0 alone, read back bit for bit.
TEST(CheckpointTransfer, ShardsTravelToTheCoordinatorWhichWritesThem) {
  const std::string dir = SharedName("transfer") + "/checkpoints/step-000000012";
  const int64_t P = 50;
  if (Rank() == 0) {
    for (int n = 0; n < 2; ++n) {
      int from = -1;
      proto::ControlMessage msg;
      ASSERT_TRUE(comm::RecvControl(World(), comm::kAnySource, &from, &msg, comm::DeadlineFromNow(), "a shard").ok());
      ASSERT_TRUE(msg.has_shard_saved());
      const auto& report = msg.shard_saved();
      EXPECT_EQ(report.path(), "server-" + std::to_string(from - 1) + ".shard");
      Status st = ReceiveShard(World(), from, report, P, dir, comm::DeadlineFromNow(), kChunk);
      ASSERT_TRUE(st.ok()) << st.ToString();
      auto sum = Sha256File(dir + "/" + report.path());
      ASSERT_TRUE(sum.ok());
      EXPECT_EQ(*sum, report.sha256());
      auto back = ReadShardFile(dir + "/" + report.path());
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      const ShardFile want = from == 1 ? MakeShard(0, 0, 20, 12) : MakeShard(1, 20, P, 12);
      EXPECT_EQ(back->begin, want.begin);
      EXPECT_EQ(back->end, want.end);
      EXPECT_EQ(back->epoch, 1);
      EXPECT_EQ(back->params, want.params);
      ASSERT_EQ(back->state.size(), 1u);
      EXPECT_EQ(back->state[0], want.state[0]);
    }
    std::system(("rm -rf " + dir.substr(0, dir.find("/checkpoints"))).c_str());
  } else {
    const ShardFile shard = Rank() == 1 ? MakeShard(0, 0, 20, 12) : MakeShard(1, 20, P, 12);
    proto::ShardSaved report;
    report.set_step(12);
    report.set_epoch(1);
    report.set_server(shard.server);
    report.set_begin(shard.begin);
    report.set_end(shard.end);
    BlobSend send;
    Status st = StartShardSend(World(), World(), 0, shard, "job", fmt::format("server-{}.shard", shard.server),
                               &report, &send, kChunk);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_TRUE(send.Wait(comm::DeadlineFromNow(), "rank 0").ok());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Bytes that do not match their report are refused and nothing is written.
TEST(CheckpointTransfer, ShardWhoseBytesDoNotMatchTheReportIsNotWritten) {
  const std::string dir = SharedName("transfer-bad");
  if (Rank() == 0) {
    proto::ControlMessage msg;
    ASSERT_TRUE(comm::RecvControl(World(), 1, nullptr, &msg, comm::DeadlineFromNow(), "a shard").ok());
    Status st = ReceiveShard(World(), 1, msg.shard_saved(), 50, dir + "/step", comm::DeadlineFromNow(), kChunk);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), Code::kDataLoss);
    EXPECT_NE(st.message().find("checksum mismatch"), std::string::npos) << st.ToString();
    EXPECT_FALSE(PathExists(dir + "/step/server-0.shard"));
    std::system(("rm -rf " + dir).c_str());
  } else if (Rank() == 1) {
    proto::ControlMessage msg;
    auto* report = msg.mutable_shard_saved();
    report->set_path("server-0.shard");
    report->set_sha256(std::string(64, '0'));
    ASSERT_TRUE(comm::SendControl(World(), 0, msg).ok());
    ASSERT_TRUE(SendBlob(World(), 0, kTagShardBytes, EncodeShardFile(MakeShard(0, 0, 50, 1), "job"),
                         comm::DeadlineFromNow(), "rank 0", kChunk).ok());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

RoleContext MakeContext(int servers) {
  RoleContext ctx;
  const std::string text = R"(
    name: "transfer"
    model {
      layer { type: "Dense" dense_param { units: 6 } }
      layer { type: "Dense" dense_param { units: 3 } }
      loss: MSE
    }
    optimizer { type: SGD learning_rate: 1 momentum: 0.5 }
    training { batch_size: 1 epochs: 3 seed: 7 })";
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &ctx.job.spec));
  auto model = nn::Model::Build(ctx.job.spec.model(), {5});
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  ctx.model = std::move(*model);
  ctx.rank = Rank();
  MPI_Comm_size(MPI_COMM_WORLD, &ctx.world);
  ctx.servers = servers;
  ctx.workers = ctx.world - 1 - servers;
  ctx.data = World();
  ctx.ctrl = World();
  return ctx;
}

// A checkpoint of two shards (written by rank 0) cut for this run's ranks.
void ExpectResumeParts(int servers) {
  RoleContext ctx = MakeContext(servers);
  const int64_t P = ctx.model.parameter_count();
  const std::string dir = SharedName("resume") + "/checkpoints/step-000000009";
  if (Rank() == 0) {
    ASSERT_TRUE(MakeDirectories(dir).ok());
    CheckpointManifest m;
    m.step = 9;
    m.epoch = 1;
    m.workers = 2;
    m.servers = 2;
    m.parameter_count = P;
    m.job_sha256 = "job";
    for (int s = 0; s < 2; ++s) {
      const ShardFile shard = MakeShard(s, s == 0 ? 0 : P / 3, s == 0 ? P / 3 : P, 9);
      const std::string file = fmt::format("server-{}.shard", s);
      ASSERT_TRUE(WriteShardFile(dir + "/" + file, shard, "job").ok());
      m.shards.push_back({s, shard.begin, shard.end, file, *Sha256File(dir + "/" + file)});
    }
    m.consumed = {{0, 4}};
    ASSERT_TRUE(WriteManifest(dir, m).ok());
  }
  ctx.resume_manifest = dir;
  MPI_Barrier(MPI_COMM_WORLD);
  Status st = ShareResumeState(&ctx);
  ASSERT_TRUE(st.ok()) << st.ToString();
  if (Rank() != 0) {
    const ShardFile& part = ctx.resumed;
    comm::KeyRange range{0, P};
    if (ctx.is_server()) range = comm::PartitionByBytes(P, servers)[ctx.server_index()];
    EXPECT_EQ(part.begin, range.begin);
    EXPECT_EQ(part.end, range.end);
    EXPECT_EQ(part.step, 9);
    EXPECT_EQ(part.epoch, 1);
    EXPECT_FALSE(part.epoch_complete);
    EXPECT_EQ(part.optimizer_steps, 9);
    ASSERT_EQ(static_cast<int64_t>(part.params.size()), range.size());
    for (int64_t i = range.begin; i < range.end; ++i) ASSERT_EQ(part.params[i - range.begin], Value(i, 0)) << i;
    // The optimizer state goes where the optimizer runs: the servers, or
    // every worker of an all-reduce job.
    const bool with_state = ctx.is_server() || servers == 0;
    ASSERT_EQ(part.state.size(), with_state ? 1u : 0u);
    if (with_state)
      for (int64_t i = range.begin; i < range.end; ++i) ASSERT_EQ(part.state[0].second[i - range.begin], Value(i, 5));
  } else {
    std::system(("rm -rf " + dir.substr(0, dir.find("/checkpoints"))).c_str());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(CheckpointTransfer, ResumeSendsEachServerItsRangeAndEachWorkerTheParameters) { ExpectResumeParts(1); }
TEST(CheckpointTransfer, ResumeSendsAllReduceWorkersTheOptimizerState) { ExpectResumeParts(0); }

TEST(CheckpointTransfer, ParametersToEvaluateArriveExactly) {
  std::vector<float> params(33);
  if (Rank() == 0) {
    for (size_t i = 0; i < params.size(); ++i) params[i] = Value(static_cast<int64_t>(i), 3);
    for (int r = 1; r <= 2; ++r) ASSERT_TRUE(SendParams(World(), r, params, comm::DeadlineFromNow()).ok());
  } else {
    ASSERT_TRUE(RecvParams(World(), 0, &params, comm::DeadlineFromNow()).ok());
    for (size_t i = 0; i < params.size(); ++i) ASSERT_EQ(params[i], Value(static_cast<int64_t>(i), 3));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace polis

int main(int argc, char** argv) { return polis::mpitest::RunMpiGoogleTests(argc, argv); }
