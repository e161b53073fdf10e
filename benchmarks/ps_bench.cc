// polis-bench-ps: parameter-server push+pull round trips through the real
// PsClient and the real server (paramserver::RunServer, BSP, SGD), next to
// MPI_Allreduce of the same size over the workers and single-core memcpy,
// interleaved iteration by iteration so a shared VM's noise hits all alike.
// Every round is verified: each worker checks every pulled value against
// the closed-form result of the servers' update.
//
//   mpirun -np $((1 + S + W)) polis-bench-ps --servers S
//
// Ranks: 0 drives (and times memcpy), 1..S are servers, the rest workers.
// The model is one Dense layer of size/4 floats (1023 inputs), so each
// server's share travels as one piece (sync.ps_piece_bytes applies as in
// training; --piece-bytes). Output (stdout, rank 0), one line per kind and size:
//   kind <TAB> servers <TAB> workers <TAB> bytes <TAB> seconds,seconds,...
// kind: ps (slowest worker's round trip), allreduce (slowest worker),
// memcpy (rank 0). benchmarks/ps_bench.sh turns them into the table.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <google/protobuf/text_format.h>
#include <sstream>
#include <string>
#include <vector>

#include "common/comm/control.h"
#include "common/comm/mpi_transport.h"
#include "common/comm/mpi_util.h"
#include "common/comm/ps_client.h"
#include "common/role.h"
#include "paramserver/server.h"

namespace polis {
namespace {

float F(int64_t i) { return static_cast<float>((i % 7) - 3) * std::ldexp(1.0f, static_cast<int>(i % 5) - 12); }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "error: %s\n", what.c_str());
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

// A barrier that sleeps instead of spinning (2 cores, up to 7 processes);
// rank 0 drains the servers' statistics meanwhile.
void QuietBarrier(MPI_Comm comm, comm::Channel* ctrl) {
  MPI_Request req;
  MPI_Ibarrier(comm, &req);
  comm::Backoff backoff;
  int done = 0;
  while (true) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) return;
    if (ctrl != nullptr) {
      proto::ControlMessage msg;
      while (comm::TryRecvControl(ctrl, comm::kAnySource, nullptr, &msg).ok()) {}
    }
    backoff.Pause();
  }
}

struct Options {
  int servers = 1;
  std::vector<int64_t> sizes;
  int warmup = 2, iters = 10;
  int64_t piece_bytes = 65536;
};

// One size: servers run their event loop until told to stop; workers and
// rank 0 interleave PS rounds, all-reduces and memcpys.
void RunSize(const Options& o, int64_t bytes, int rank, int world) {
  const int S = o.servers, W = world - 1 - S;
  const int64_t P = bytes / 4;
  RoleContext ctx;
  const std::string text = R"(
    name: "ps_bench"
    model { layer { type: "Dense" dense_param { units: 1 } } loss: MSE }
    optimizer { type: SGD learning_rate: 1 momentum: 0 }
    training { batch_size: 1 epochs: 1 seed: 3 checkpoint_epochs: false }
    sync { mode: PARAMETER_SERVER consistency: BSP })";
  if (!google::protobuf::TextFormat::ParseFromString(text, &ctx.job.spec)) Die("bad built-in job");
  ctx.job.spec.mutable_model()->mutable_layer(0)->mutable_dense_param()->set_units(static_cast<int>(P / 1024));
  ctx.job.spec.mutable_sync()->set_servers(S);
  ctx.job.spec.mutable_sync()->set_ps_piece_bytes(o.piece_bytes);
  auto model = nn::Model::Build(ctx.job.spec.model(), {1023});
  if (!model.ok()) Die(model.status().ToString());
  ctx.model = std::move(*model);
  if (ctx.model.parameter_count() != P) Die("size must be a multiple of 4 KiB");
  ctx.rank = rank;
  ctx.world = world;
  ctx.servers = S;
  ctx.workers = W;
  ctx.run_dir = "/tmp";
  ctx.train_samples = 1 << 20;
  auto transport = comm::MakeMpiTransport(MPI_COMM_WORLD, ctx.is_worker());
  if (!transport.ok()) Die(transport.status().ToString());
  ctx.transport = transport->get();
  ctx.ctrl = ctx.transport->control();
  ctx.data = ctx.transport->data();
  MPI_Comm others, workers;  // rank 0 + workers; workers alone
  MPI_Comm_split(MPI_COMM_WORLD, ctx.is_server() ? MPI_UNDEFINED : 0, rank, &others);
  MPI_Comm_split(MPI_COMM_WORLD, ctx.is_worker() ? 0 : MPI_UNDEFINED, rank, &workers);

  if (ctx.is_server()) {
    Status st = paramserver::RunServer(ctx);
    if (!st.ok()) Die(st.ToString());
  } else {
    const int w = ctx.is_worker() ? ctx.worker_index() : -1;
    std::vector<float> params, grads, expected, delta, ar, ar_expected, ar_in, src, dst;
    std::unique_ptr<comm::PsClient> client;
    if (w >= 0) {
      params.assign(P, 0.f);
      grads.resize(P);
      expected.resize(P);
      delta.resize(P);
      ar.resize(P);
      ar_in.resize(P);
      ar_expected.resize(P);
      ctx.model.InitParams(expected.data(), ctx.job.spec.training().seed());
      // Worker v pushes (v + 1) F(i) for 1 sample; the servers add in worker
      // order and scale by 1/W, then SGD(lr 1) subtracts.
      const float inv = 1.0f / static_cast<float>(W);
      for (int64_t i = 0; i < P; ++i) {
        grads[i] = static_cast<float>(w + 1) * F(i);
        float g = 1.0f * F(i);
        for (int v = 1; v < W; ++v) g = g + static_cast<float>(v + 1) * F(i);
        delta[i] = g * inv;
        ar_in[i] = grads[i];
        ar_expected[i] = static_cast<float>(W * (W + 1) / 2) * F(i);
      }
      std::vector<int> ranks;
      for (int s = 0; s < S; ++s) ranks.push_back(ctx.server_rank(s));
      client = std::make_unique<comm::PsClient>(ctx.data, ranks, comm::PartitionByBytes(P, S),
                                                comm::PlanPieces(ctx.model, S, o.piece_bytes));
    } else {
      src.assign(P, 1.0f);
      dst.assign(P, 0.0f);
    }
    std::vector<double> t_ps, t_ar, t_mc;
    int64_t step = 0;
    for (int it = -o.warmup; it < o.iters; ++it) {
      double took = 0, mine = 0;
      // Push + pull round trip.
      QuietBarrier(others, rank == 0 ? ctx.ctrl : nullptr);
      if (w >= 0) {
        const double t0 = MPI_Wtime();
        PushHeader h;
        h.step = step;
        h.samples = 1;
        h.consumed = step + 1;
        auto ts = client->PushPull(h, grads.data(), params.data());
        if (!ts.ok()) Die(ts.status().ToString());
        PullHeader reply;
        Status st = client->Wait(*ts, &reply);
        if (!st.ok()) Die(st.ToString());
        mine = MPI_Wtime() - t0;
        ++step;
        for (int64_t i = 0; i < P; ++i) expected[i] -= delta[i];
        if (std::memcmp(params.data(), expected.data(), sizeof(float) * P) != 0 || reply.step != step) {
          int64_t i = 0;
          while (i < P && params[i] == expected[i]) ++i;
          Die(fmt::format("worker {}: round {}, {} bytes: parameter {} is {}, expected {} (server step {})", w,
                          step, bytes, i, i < P ? params[i] : 0.f, i < P ? expected[i] : 0.f, reply.step));
        }
      }
      MPI_Reduce(&mine, &took, 1, MPI_DOUBLE, MPI_MAX, 0, others);
      if (rank == 0 && it >= 0) t_ps.push_back(took);
      // MPI_Allreduce of the same size over the workers.
      mine = 0;
      QuietBarrier(others, rank == 0 ? ctx.ctrl : nullptr);
      if (w >= 0) {
        std::memcpy(ar.data(), ar_in.data(), sizeof(float) * P);
        const double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, ar.data(), static_cast<int>(P), MPI_FLOAT, MPI_SUM, workers);
        mine = MPI_Wtime() - t0;
        if (std::memcmp(ar.data(), ar_expected.data(), sizeof(float) * P) != 0)
          Die(fmt::format("worker {}: MPI_Allreduce of {} bytes gave a wrong sum", w, bytes));
      }
      MPI_Reduce(&mine, &took, 1, MPI_DOUBLE, MPI_MAX, 0, others);
      if (rank == 0 && it >= 0) t_ar.push_back(took);
      // Single-core memcpy, everyone else asleep.
      QuietBarrier(others, rank == 0 ? ctx.ctrl : nullptr);
      if (rank == 0) {
        src[it & 1023] = static_cast<float>(it);
        const double t0 = MPI_Wtime();
        std::memcpy(dst.data(), src.data(), static_cast<size_t>(bytes));
        const double t = MPI_Wtime() - t0;
        if (dst[it & 1023] != static_cast<float>(it)) Die("memcpy did not copy");
        if (it >= 0) t_mc.push_back(t);
      }
    }
    if (client) {
      // The goodbye the stopping servers wait for.
      Status st = client->Leave();
      if (!st.ok()) Die(st.ToString());
    }
    QuietBarrier(others, rank == 0 ? ctx.ctrl : nullptr);
    if (rank == 0) {
      proto::ControlMessage stop;
      stop.mutable_server_command()->set_kind(proto::ServerCommand::STOP);
      for (int s = 0; s < S; ++s) {
        Status st = comm::SendControl(ctx.ctrl, ctx.server_rank(s), stop);
        if (!st.ok()) Die(st.ToString());
      }
      int finals = 0;
      comm::Backoff backoff;
      while (finals < S) {
        proto::ControlMessage msg;
        if (comm::TryRecvControl(ctx.ctrl, comm::kAnySource, nullptr, &msg).ok()) {
          if (msg.has_server_stats() && msg.server_stats().final()) ++finals;
        } else {
          backoff.Pause();
        }
      }
      auto line = [&](const char* kind, const std::vector<double>& t) {
        std::printf("%s\t%d\t%d\t%lld\t", kind, S, W, static_cast<long long>(bytes));
        for (size_t i = 0; i < t.size(); ++i) std::printf("%s%.9f", i ? "," : "", t[i]);
        std::printf("\n");
      };
      line("ps", t_ps);
      line("allreduce", t_ar);
      line("memcpy", t_mc);
      std::fflush(stdout);
    }
  }
  if (others != MPI_COMM_NULL) MPI_Comm_free(&others);
  if (workers != MPI_COMM_NULL) MPI_Comm_free(&workers);
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace polis

int main(int argc, char** argv) {
  int provided = 0;
  polis::comm::SetOpenMpiDefaults();
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  CLI::App app{"Parameter-server push+pull bandwidth vs MPI_Allreduce and memcpy (verified)"};
  polis::Options o;
  std::string sizes_mib = "1,4,16,64";
  app.add_option("--servers", o.servers, "server ranks (1..world-2)");
  app.add_option("--sizes-mib", sizes_mib, "model sizes in MiB, comma-separated");
  app.add_option("--warmup", o.warmup, "untimed rounds per size");
  app.add_option("--iters", o.iters, "timed rounds per size");
  app.add_option("--piece-bytes", o.piece_bytes, "sync.ps_piece_bytes");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = rank == 0 ? app.exit(e) : 1;
    MPI_Finalize();
    return rc;
  }
  if (o.servers < 1 || world - 1 - o.servers < 1) {
    if (rank == 0) std::fprintf(stderr, "error: need 1 + servers + at least 1 worker ranks (have %d)\n", world);
    MPI_Finalize();
    return 1;
  }
  std::stringstream ss(sizes_mib);
  std::string item;
  while (std::getline(ss, item, ',')) o.sizes.push_back(std::stoll(item) << 20);
  for (int64_t bytes : o.sizes) polis::RunSize(o, bytes, rank, world);
  MPI_Finalize();
  return 0;
}
