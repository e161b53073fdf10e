// The parameter-server transport under real mpirun, with the real server:
// rank 0 stands in for the coordinator, ranks 1..2 are servers
// (paramserver::RunServer), ranks 3..4 are workers driving PsClient.
//
// A three-layer model whose middle layer straddles the two servers' key
// ranges; SGD with learning rate 1, so after every BSP round the exact
// parameters are known in closed form. Workers push their pieces in a
// different shuffled order every round, with pauses between them, and wait
// for pull pieces in shuffled order too. The same rounds run with one piece
// per layer and with one message per server, and must end bit-identical.
// Two more tests stop the servers and workers in the middle of a round, in
// both orders, and require every rank to end with nothing left unreceived.
//
//   mpirun -np 5 polis_ps_mpi_tests
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <google/protobuf/text_format.h>
#include <random>
#include <thread>

#include "common/comm/control.h"
#include "common/comm/mpi_transport.h"
#include "common/comm/ps_client.h"
#include "common/role.h"
#include "paramserver/server.h"
#include "tests/mpi/mpi_gtest_main.h"

namespace polis {
namespace {

constexpr int kServers = 2, kWorkers = 2, kRounds = 6;

float F(int64_t i) { return static_cast<float>((i % 7) - 3) * std::ldexp(1.0f, static_cast<int>(i % 5) - 4); }

RoleContext MakeContext(int64_t piece_bytes, const std::string& run_dir, comm::Transport* transport) {
  RoleContext ctx;
  const std::string text = R"(
    name: "ps_transport"
    model {
      layer { type: "Dense" dense_param { units: 20 } }
      layer { type: "Dense" dense_param { units: 30 } }
      layer { type: "Dense" dense_param { units: 5 } }
      loss: MSE
    }
    optimizer { type: SGD learning_rate: 1 momentum: 0 }
    training { batch_size: 1 epochs: 1 seed: 7 checkpoint_epochs: false }
    sync { mode: PARAMETER_SERVER consistency: BSP })";
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &ctx.job.spec));
  ctx.job.spec.mutable_sync()->set_servers(kServers);
  ctx.job.spec.mutable_sync()->set_ps_piece_bytes(piece_bytes);
  auto model = nn::Model::Build(ctx.job.spec.model(), {37});
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  ctx.model = std::move(*model);
  MPI_Comm_rank(MPI_COMM_WORLD, &ctx.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ctx.world);
  ctx.servers = kServers;
  ctx.workers = kWorkers;
  ctx.run_dir = run_dir;
  ctx.train_samples = 1000;
  ctx.transport = transport;
  ctx.ctrl = transport->control();
  ctx.data = transport->data();
  return ctx;
}

// Stands in for the coordinator: drains the servers' statistics until the
// workers are done, then stops the servers and waits for their last word.
void Coordinator(const RoleContext& ctx, MPI_Comm done_comm) {
  MPI_Request done;
  MPI_Ibarrier(done_comm, &done);
  comm::Backoff backoff;
  int finished = 0, finals = 0;
  while (finals < kServers) {
    proto::ControlMessage msg;
    Status st = comm::TryRecvControl(ctx.ctrl, comm::kAnySource, nullptr, &msg);
    if (st.ok()) {
      if (msg.has_server_stats() && msg.server_stats().final()) ++finals;
      backoff.Reset();
      continue;
    }
    if (!finished) {
      MPI_Test(&done, &finished, MPI_STATUS_IGNORE);
      if (finished) {
        proto::ControlMessage stop;
        stop.mutable_server_command()->set_kind(proto::ServerCommand::STOP);
        for (int s = 0; s < kServers; ++s) ASSERT_TRUE(comm::SendControl(ctx.ctrl, ctx.server_rank(s), stop).ok());
      }
    }
    backoff.Pause();
  }
}

void PsClientRound(comm::PsClient* client, const std::vector<int>& order, int r, const float* grads,
                   float* params, std::mt19937* rng) {
  const int n = static_cast<int>(order.size());
  // Push all but one piece now, in shuffled order, pausing so the servers
  // see partial pushes; Finish sends the last one, then the header.
  for (int k = 0; k + 1 < n; ++k) {
    EXPECT_TRUE(client->Push(order[k], grads).ok());
    if ((k + r) % 2 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  PushHeader h;
  h.step = r;
  h.samples = 1;
  h.consumed = r + 1;
  auto ts = client->Finish(h, grads, params);
  ASSERT_TRUE(ts.ok());
  PullHeader reply;
  Status st = client->WaitHeaders(*ts, &reply);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(reply.step, r + 1);
  EXPECT_EQ(reply.total_samples, kWorkers);
  std::vector<int> pulls = order;
  std::shuffle(pulls.begin(), pulls.end(), *rng);
  for (int k : pulls) EXPECT_TRUE(client->WaitPieces(&k, 1).ok());
  EXPECT_TRUE(client->WaitPulls().ok());
}

void RawRound(const RoleContext& ctx, const std::vector<comm::Piece>& pieces, const std::vector<int>& order,
              int r, const float* grads, float* params) {
  std::vector<comm::Request> reqs;
  reqs.reserve(2 * pieces.size() + 2 * kServers);
  std::vector<PullHeader> replies(kServers);
  std::vector<PushHeader> headers(kServers);
  for (size_t k = 0; k < pieces.size(); ++k) {
    const comm::Piece& p = pieces[k];
    reqs.emplace_back();
    ASSERT_TRUE(ctx.data->Irecv(params + p.begin, sizeof(float) * p.size(), ctx.server_rank(p.server),
                                comm::kTagPullPieceBase + p.slot, &reqs.back()).ok());
  }
  for (int s = 0; s < kServers; ++s) {
    headers[s].step = r;
    headers[s].samples = 1;
    headers[s].consumed = r + 1;
    reqs.emplace_back();
    ASSERT_TRUE(ctx.data->Irecv(&replies[s], sizeof(PullHeader), ctx.server_rank(s), comm::kTagPullHeader,
                                &reqs.back()).ok());
    reqs.emplace_back();
    ASSERT_TRUE(ctx.data->Isend(&headers[s], sizeof(PushHeader), ctx.server_rank(s), comm::kTagPushHeader,
                                &reqs.back()).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (int k : order) {
    const comm::Piece& p = pieces[k];
    reqs.emplace_back();
    ASSERT_TRUE(ctx.data->Isend(grads + p.begin, sizeof(float) * p.size(), ctx.server_rank(p.server),
                                comm::kTagPushPieceBase + p.slot, &reqs.back()).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Status st = comm::WaitAll(ctx.data, reqs.data(), static_cast<int>(reqs.size()), comm::DeadlineFromNow(),
                            [] { return std::string("a hand-made round"); });
  ASSERT_TRUE(st.ok()) << st.ToString();
  for (const PullHeader& h : replies) EXPECT_EQ(h.step, r + 1);
}

// Runs kRounds BSP rounds on a worker; returns its final parameters.
std::vector<float> Worker(const RoleContext& ctx, int64_t piece_bytes) {
  const int64_t P = ctx.model.parameter_count();
  const int w = ctx.worker_index();
  std::vector<int> servers;
  for (int s = 0; s < kServers; ++s) servers.push_back(ctx.server_rank(s));
  comm::PsClient client(ctx.data, servers, comm::PartitionByBytes(P, kServers),
                        comm::PlanPieces(ctx.model, kServers, piece_bytes));
  const int n = static_cast<int>(client.pieces().size());
  std::vector<float> params(P), grads(P), expected(P);
  ctx.model.InitParams(expected.data(), ctx.job.spec.training().seed());
  std::mt19937 rng(1234 + w);
  for (int r = 0; r < kRounds; ++r) {
    for (int64_t i = 0; i < P; ++i) grads[i] = static_cast<float>(w + 1) * F(i + r);
    std::vector<int> order(n);
    for (int k = 0; k < n; ++k) order[k] = k;
    std::shuffle(order.begin(), order.end(), rng);
    if (w == 1 && r % 2 == 1) {
      // The wire protocol by hand: this time the header goes first and the
      // pieces follow later, in shuffled order.
      RawRound(ctx, client.pieces(), order, r, grads.data(), params.data());
    } else {
      PsClientRound(&client, order, r, grads.data(), params.data(), &rng);
    }
    // The server's update: p -= 1 * ((g0 + g1) * (1/2)).
    for (int64_t i = 0; i < P; ++i) expected[i] -= (1.0f * F(i + r) + 2.0f * F(i + r)) * 0.5f;
    for (int64_t i = 0; i < P; ++i) {
      if (params[i] != expected[i]) {
        ADD_FAILURE() << "worker " << w << " round " << r << " piece_bytes " << piece_bytes << ": parameter " << i
                      << " is " << params[i] << ", expected " << expected[i];
        break;
      }
    }
  }
  // The goodbye a stopping server waits for.
  Status left = client.Leave();
  EXPECT_TRUE(left.ok()) << left.ToString();
  return params;
}

std::vector<float> RunJob(int64_t piece_bytes) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // No checkpoints are configured, so the run directory stays unused.
  auto transport = comm::MakeMpiTransport(MPI_COMM_WORLD, rank > kServers);
  EXPECT_TRUE(transport.ok());
  RoleContext ctx = MakeContext(piece_bytes, "/tmp", transport->get());
  MPI_Comm done_comm;
  MPI_Comm_split(MPI_COMM_WORLD, ctx.is_server() ? MPI_UNDEFINED : 0, rank, &done_comm);
  std::vector<float> params;
  if (rank == 0) {
    Coordinator(ctx, done_comm);
  } else if (ctx.is_server()) {
    Status st = paramserver::RunServer(ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
  } else {
    params = Worker(ctx, piece_bytes);
    // Rank 0 takes part with MPI_Ibarrier; a blocking barrier would not match it.
    MPI_Request done;
    MPI_Ibarrier(done_comm, &done);
    MPI_Wait(&done, MPI_STATUS_IGNORE);
  }
  if (done_comm != MPI_COMM_NULL) MPI_Comm_free(&done_comm);
  MPI_Barrier(MPI_COMM_WORLD);
  return params;
}

TEST(PsTransport, PiecesOutOfOrderAndALayerAcrossTwoServers) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ASSERT_EQ(world, 1 + kServers + kWorkers);
  // One piece per layer: the middle layer is two pieces, one per server.
  std::vector<float> per_layer = RunJob(0);
  // One message per server per round (no overlap): the same parameters.
  std::vector<float> whole = RunJob(-1);
  EXPECT_EQ(per_layer, whole);
}

// ---- stopping in the middle of a round (docs/design/parameter-server.md, "Stopping") ----
//
// Worker 0 pushes round 0 and waits; worker 1 has not pushed yet. Then:
//  - kWorkerFirst: the coordinator's STOP reaches worker 0 while it waits;
//    worker 1 pushes afterwards, so the servers answer worker 0 normally
//    after it has seen the stop. Worker 0 must take that answer (the
//    servers' sends would otherwise wait for it forever).
//  - kServersFirst: the servers stop first and answer worker 0 "stopped";
//    worker 1's push crosses the stop and is answered "stopped" too.
// Every rank must then end with nothing left unreceived: the servers
// return OK once both workers said goodbye, and no wait runs into
// POLIS_TIMEOUT_S.
enum class StopOrder { kWorkerFirst, kServersFirst };
constexpr int kStepTag = 77;  // the test's own hand-offs, on MPI_COMM_WORLD

void Signal(int to) {
  int one = 1;
  MPI_Send(&one, 1, MPI_INT, to, kStepTag, MPI_COMM_WORLD);
}
void AwaitSignal(int from) {
  int one = 0;
  MPI_Recv(&one, 1, MPI_INT, from, kStepTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

void SendStop(const RoleContext& ctx, int rank) {
  proto::ControlMessage stop;
  stop.mutable_server_command()->set_kind(proto::ServerCommand::STOP);
  ASSERT_TRUE(comm::SendControl(ctx.ctrl, rank, stop).ok());
}

void StopCoordinator(const RoleContext& ctx, StopOrder order) {
  const int w0 = ctx.worker_rank(0), w1 = ctx.worker_rank(1);
  AwaitSignal(w0);  // round 0 pushed
  if (order == StopOrder::kWorkerFirst) {
    SendStop(ctx, w0);
    AwaitSignal(w0);  // it saw the stop while waiting
    Signal(w1);       // now the round can complete
    AwaitSignal(w1);  // answered normally
    for (int s = 0; s < kServers; ++s) SendStop(ctx, ctx.server_rank(s));
    SendStop(ctx, w1);
  } else {
    for (int s = 0; s < kServers; ++s) SendStop(ctx, ctx.server_rank(s));
    AwaitSignal(w0);  // answered "stopped"
    Signal(w1);       // pushes across the stop
    SendStop(ctx, w0);
    SendStop(ctx, w1);
  }
  // Every server's final statistics (and heartbeats before them).
  int finals = 0;
  comm::Backoff backoff;
  while (finals < kServers) {
    proto::ControlMessage msg;
    if (comm::TryRecvControl(ctx.ctrl, comm::kAnySource, nullptr, &msg).ok()) {
      if (msg.has_server_stats() && msg.server_stats().final()) ++finals;
    } else {
      backoff.Pause();
    }
  }
}

void StopWorker(const RoleContext& ctx, StopOrder order) {
  const int64_t P = ctx.model.parameter_count();
  const int w = ctx.worker_index();
  std::vector<int> servers;
  for (int s = 0; s < kServers; ++s) servers.push_back(ctx.server_rank(s));
  comm::PsClient client(ctx.data, servers, comm::PartitionByBytes(P, kServers), comm::PlanPieces(ctx.model, kServers, 0),
                        ctx.ctrl, 0);
  std::vector<float> params(P, 0.0f), grads(P), expected(P);
  ctx.model.InitParams(expected.data(), ctx.job.spec.training().seed());
  for (int64_t i = 0; i < P; ++i) {
    grads[i] = static_cast<float>(w + 1) * F(i);
    expected[i] -= (1.0f * F(i) + 2.0f * F(i)) * 0.5f;  // round 0's BSP update
  }
  PushHeader h;
  h.samples = 1;
  h.consumed = 1;
  if (w == 1) AwaitSignal(0);
  auto ts = client.PushPull(h, grads.data(), params.data());
  ASSERT_TRUE(ts.ok()) << ts.status().ToString();
  if (w == 0) Signal(0);
  PullHeader reply;
  Status st = client.Wait(*ts, &reply);
  const bool answered = w == 1 && order == StopOrder::kWorkerFirst;
  if (answered) {
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(params, expected) << "worker 1 after round 0";
    Signal(0);
    proto::ControlMessage stop;
    ASSERT_TRUE(comm::RecvControl(ctx.ctrl, 0, nullptr, &stop, comm::DeadlineFromNow(), "the stop").ok());
  } else {
    EXPECT_EQ(st.code(), Code::kCancelled) << "worker " << w << ": " << st.ToString();
    if (w == 0) Signal(0);
  }
  Status left = client.Leave();
  ASSERT_TRUE(left.ok()) << "worker " << w << ": " << left.ToString();
  // Worker 0 saw the stop first, then took the servers' normal answer.
  if (w == 0 && order == StopOrder::kWorkerFirst) {
    EXPECT_EQ(params, expected) << "worker 0 after leaving";
  }
}

void RunStopMidRound(StopOrder order) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  auto transport = comm::MakeMpiTransport(MPI_COMM_WORLD, rank > kServers);
  ASSERT_TRUE(transport.ok());
  RoleContext ctx = MakeContext(0, "/tmp", transport->get());
  if (rank == 0) {
    StopCoordinator(ctx, order);
  } else if (ctx.is_server()) {
    Status st = paramserver::RunServer(ctx);
    EXPECT_TRUE(st.ok()) << "server " << ctx.server_index() << ": " << st.ToString();
  } else {
    StopWorker(ctx, order);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(PsTransport, StopSeenByAWorkerBeforeTheServersAnswerItsPush) { RunStopMidRound(StopOrder::kWorkerFirst); }

TEST(PsTransport, ServersStoppingAnswerEveryPushWithoutParameters) { RunStopMidRound(StopOrder::kServersFirst); }

}  // namespace
}  // namespace polis

int main(int argc, char** argv) { return polis::mpitest::RunMpiGoogleTests(argc, argv); }
