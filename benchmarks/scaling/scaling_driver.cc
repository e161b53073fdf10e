// polis-scaling: Polis' all-reduce algorithms (common/comm/allreduce_*.cc
// through MpiCommunicator) and the parameter-server push/pull round
// (common/comm/ps_client.cc, ps_pieces.cc, the server's sum
// paramserver/aggregate.cc and the optimizer common/optimizer.cc), driven
// by one thread in single-threaded mode (common/comm/wait.h).
//
// Built twice from this one file (benchmarks/scaling/CMakeLists.txt):
//   polis-scaling      Open MPI: real processes, real sockets (mpirun)
//   polis-scaling-sim  SimGrid SMPI (smpicxx flags, POLIS_SMPI): the same
//                      code on a simulated platform (smpirun); buffers
//                      folded with SMPI_SHARED_MALLOC, compute injected
//                      with smpi_execute (docs/design/simulation.md).
//
// Modes (arguments are --key=value):
//   check      every algorithm x wire on a deterministic input, then a PS
//              round; prints one line per case with a hash of the result's
//              bits (every rank must agree) and whether it lies within the
//              fp32 rounding bound of the exact sum.
//   allreduce  --algo --wire --count --iters [--compute-s --ranks-per-host
//              --reduce-ns]: step = compute + Allreduce; prints the median
//              over iterations of the slowest rank's time.
//   ps         --servers --count --layers --piece-bytes --iters
//              [--compute-s --apply-ns]: ranks [0, S) are servers, the rest
//              workers; step = compute + one BSP push/pull round.
// Times are MPI_Wtime: wall time under Open MPI, simulated time under SMPI.
// --waits=block|poll: single-threaded mode (default) or Polis' normal waits.
// --arithmetic=on|off (SMPI only): off skips every sum, fill and hash, for
// memory folded by SMPI_SHARED_MALLOC (their cost is injected).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/comm/allreduce_kernels.h"
#include "common/comm/channel.h"
#include "common/comm/key_ranges.h"
#include "common/comm/mpi_communicator.h"
#include "common/comm/mpi_transport.h"
#include "common/comm/ps_client.h"
#include "common/comm/ps_pieces.h"
#include "common/comm/wait.h"
#include "common/optimizer.h"
#include "common/role.h"
#include "paramserver/aggregate.h"

namespace polis::scaling {
namespace {

using comm::AllreduceAlgorithm;
using comm::WireType;

struct Args {
  std::map<std::string, std::string> kv;
  std::string Get(const std::string& k, const std::string& def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : it->second;
  }
  int64_t Int(const std::string& k, int64_t def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : std::strtoll(it->second.c_str(), nullptr, 10);
  }
  double Real(const std::string& k, double def) const {
    auto it = kv.find(k);
    return it == kv.end() ? def : std::strtod(it->second.c_str(), nullptr);
  }
};

// The rank and size of MPI_COMM_WORLD, asked each time: no globals, since
// an SMPI run may share one copy of them between all simulated ranks.
int Rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int Size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "polis-scaling: rank %d: %s\n", Rank(), msg.c_str());
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}
void Check(const Status& st, const char* what) {
  if (!st.ok()) Die(std::string(what) + ": " + st.ToString());
}

// Whether values are computed at all: always with Open MPI; under SMPI
// unless --arithmetic=off (sim.sh's default with folded memory, whose values
// mean nothing: the kernels, fills and hashes are skipped, their cost is
// injected, and the messages are the same).
bool Arith() {
#ifdef POLIS_SMPI
  return comm::internal::Arithmetic();
#else
  return true;
#endif
}

// Buffers: folded under SMPI (every rank's pages are the same few physical
// ones unless smpi/shared-malloc:none), ordinary elsewhere.
float* AllocFloats(int64_t n) {
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
#ifdef POLIS_SMPI
  void* p = SMPI_SHARED_MALLOC(bytes);
#else
  void* p = std::malloc(bytes);
#endif
  if (p == nullptr) Die("out of memory");
  if (Arith()) std::memset(p, 0, bytes);
  return static_cast<float*>(p);
}
void FreeFloats(float* p) {
#ifdef POLIS_SMPI
  SMPI_SHARED_FREE(p);
#else
  std::free(p);
#endif
}

// Compute of `seconds` on this rank: simulated under SMPI, slept otherwise
// (the real runs of the validation inject none).
void Compute(double seconds) {
  if (seconds <= 0) return;
#ifdef POLIS_SMPI
  smpi_execute(seconds);
#else
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
#endif
}

// A deterministic input whose fp32 sums depend on the order of addition:
// values of mixed sign and magnitude.
float Value(int who, int64_t i) {
  const int64_t m = (int64_t{who} * 7919 + i * 104729) % 2049;
  return std::ldexp(static_cast<float>(m - 1024) + 0.375f, -static_cast<int>((i + who) % 13));
}

uint64_t Hash(const float* v, int64_t n) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    h = (h ^ bits) * 1099511628211ull;
  }
  return h;
}

// Whether every rank with `take` passes the same hash.
bool Agree(uint64_t h, bool take) {
  uint64_t lo = take ? h : UINT64_MAX, hi = take ? h : 0, glo = 0, ghi = 0;
  MPI_Allreduce(&lo, &glo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&hi, &ghi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  return glo == ghi;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Per iteration, the slowest rank's time (every rank calls).
std::vector<double> Slowest(const std::vector<double>& mine) {
  std::vector<double> out(mine.size());
  MPI_Allreduce(mine.data(), out.data(), static_cast<int>(mine.size()), MPI_DOUBLE, MPI_MAX,
                MPI_COMM_WORLD);
  return out;
}

std::vector<int> Placement(int ranks, int per_host) {
  std::vector<int> host(ranks);
  for (int r = 0; r < ranks; ++r) host[r] = r / std::max(per_host, 1);
  return host;
}

// ---- the parameter-server round ----

// Layer sizes: "--layers=a,b,c" (floats each) or `count` cut into `n` equal layers.
std::vector<comm::LayerSpan> Layers(const Args& a, int64_t count) {
  std::vector<comm::LayerSpan> out;
  const std::string list = a.Get("layers", "");
  if (list.find(',') != std::string::npos) {
    int64_t off = 0;
    size_t pos = 0;
    while (pos <= list.size()) {
      size_t end = list.find(',', pos);
      if (end == std::string::npos) end = list.size();
      const int64_t c = std::strtoll(list.substr(pos, end - pos).c_str(), nullptr, 10);
      out.push_back({off, c});
      off += c;
      pos = end + 1;
    }
    return out;
  }
  const int64_t n = std::max<int64_t>(1, list.empty() ? 8 : std::strtoll(list.c_str(), nullptr, 10));
  int64_t off = 0;
  for (int64_t l = 0; l < n; ++l) {
    const int64_t c = count / n + (l < count % n ? 1 : 0);
    out.push_back({off, c});
    off += c;
  }
  return out;
}

// One BSP server, as paramserver/server.cc runs it: receives every worker's
// header and pieces straight into its place, averages in worker order,
// takes one optimizer step, replies with the parameters.
class Server {
 public:
  Server(comm::Channel* data, int index, int servers, int workers, comm::KeyRange range,
         std::vector<comm::Piece> pieces, double apply_ns_per_float)
      : data_(data), index_(index), S_(servers), W_(workers), range_(range),
        pieces_(std::move(pieces)), apply_ns_(apply_ns_per_float) {
    n_ = range_.size();
    proto::OptimizerSpec spec;  // Adam: the default optimizer
    auto opt = MakeOptimizer(spec, n_, 1000);
    Check(opt.status(), "MakeOptimizer");
    optimizer_ = std::move(*opt);
    params_ = AllocFloats(n_);
    sum_ = AllocFloats(n_);
    if (Arith())
      for (int64_t i = 0; i < n_; ++i) params_[i] = Value(1000 + index_, range_.begin + i) * 1e-3f;
    for (int w = 0; w < W_; ++w) recv_.push_back(AllocFloats(n_));
    push_.resize(W_);
    pull_.resize(W_);
    R_ = 1 + static_cast<int>(pieces_.size());
  }
  ~Server() {
    FreeFloats(params_);
    FreeFloats(sum_);
    for (float* r : recv_) FreeFloats(r);
  }
  const float* params() const { return params_; }
  int64_t n() const { return n_; }

  void Round() {
    std::vector<comm::Request> rreq(static_cast<size_t>(R_) * W_), sreq(rreq.size());
    for (int w = 0; w < W_; ++w) {
      comm::Request* q = &rreq[static_cast<size_t>(R_) * w];
      Check(data_->Irecv(&push_[w], sizeof(PushHeader), S_ + w, comm::kTagPushHeader, &q[0]), "Irecv");
      for (size_t k = 0; k < pieces_.size(); ++k) {
        const comm::Piece& p = pieces_[k];
        Check(data_->Irecv(recv_[w] + (p.begin - range_.begin), sizeof(float) * p.size(), S_ + w,
                           comm::kTagPushPieceBase + p.slot, &q[1 + k]),
              "Irecv");
      }
    }
    Check(comm::WaitAll(data_, rreq.data(), static_cast<int>(rreq.size()), comm::DeadlineFromNow(),
                        [] { return std::string("pushes"); }),
          "server wait");
    int64_t total = 0;
    for (int w = 0; w < W_; ++w) total += push_[w].samples;
    std::vector<const float*> in(recv_.begin(), recv_.end());
    if (Arith()) {
      paramserver::AverageInOrder(in.data(), in.size(), n_, 1.0f / static_cast<float>(total), sum_);
      optimizer_->Step(params_, sum_);
    }
    // The sum and step cost what was measured per float on this machine
    // (the simulator runs them, but on folded memory and at no simulated cost).
    Compute(apply_ns_ * 1e-9 * static_cast<double>(n_) * static_cast<double>(W_ + 1));
    ++step_;
    for (int w = 0; w < W_; ++w) {
      comm::Request* q = &sreq[static_cast<size_t>(R_) * w];
      pull_[w] = {step_, total, 0};
      Check(data_->Isend(&pull_[w], sizeof(PullHeader), S_ + w, comm::kTagPullHeader, &q[0]), "Isend");
      for (size_t k = 0; k < pieces_.size(); ++k) {
        const comm::Piece& p = pieces_[k];
        Check(data_->Isend(params_ + (p.begin - range_.begin), sizeof(float) * p.size(), S_ + w,
                           comm::kTagPullPieceBase + p.slot, &q[1 + k]),
              "Isend");
      }
    }
    Check(comm::WaitAll(data_, sreq.data(), static_cast<int>(sreq.size()), comm::DeadlineFromNow(),
                        [] { return std::string("replies"); }),
          "server reply wait");
  }

 private:
  comm::Channel* data_;
  int index_, S_, W_;
  comm::KeyRange range_;
  std::vector<comm::Piece> pieces_;
  double apply_ns_;
  int64_t n_ = 0;
  int R_ = 0;
  int64_t step_ = 0;
  std::unique_ptr<Optimizer> optimizer_;
  float* params_ = nullptr;
  float* sum_ = nullptr;
  std::vector<float*> recv_;
  std::vector<PushHeader> push_;
  std::vector<PullHeader> pull_;
};

struct PsSetup {
  int S = 1, W = 1;
  int64_t count = 0;
  std::vector<comm::KeyRange> ranges;
  std::vector<comm::Piece> pieces;
};

PsSetup PlanPs(const Args& a, int64_t count) {
  PsSetup ps;
  ps.S = static_cast<int>(a.Int("servers", 1));
  ps.W = Size() - ps.S;
  if (ps.S < 1 || ps.W < 1) Die("ps needs --servers >= 1 and at least one worker rank besides them");
  ps.count = count;
  ps.ranges = comm::PartitionByBytes(count, ps.S);
  ps.pieces = comm::PlanPieces(Layers(a, count), ps.ranges, a.Int("piece-bytes", 4 << 20));
  return ps;
}

// Runs `rounds` PS rounds; returns each round's time on this rank and, on
// workers, the final parameters' hash.
std::vector<double> RunPs(const Args& a, const PsSetup& ps, int rounds, double compute_s,
                          uint64_t* hash) {
  std::unique_ptr<comm::Channel> data = comm::MakeMpiChannel(MPI_COMM_WORLD);
  std::vector<double> times;
  const double apply_ns = a.Real("apply-ns", 0);
  if (Rank() < ps.S) {
    std::vector<comm::Piece> mine;
    for (const comm::Piece& p : ps.pieces)
      if (p.server == Rank()) mine.push_back(p);
    std::sort(mine.begin(), mine.end(), [](const comm::Piece& x, const comm::Piece& y) { return x.slot < y.slot; });
    Server server(data.get(), Rank(), ps.S, ps.W, ps.ranges[Rank()], std::move(mine), apply_ns);
    MPI_Barrier(MPI_COMM_WORLD);
    for (int r = 0; r < rounds; ++r) {
      const double t0 = MPI_Wtime();
      server.Round();
      times.push_back(MPI_Wtime() - t0);
    }
    *hash = Arith() ? Hash(server.params(), server.n()) : 0;
    return times;
  }
  const int w = Rank() - ps.S;
  std::vector<int> server_ranks(ps.S);
  for (int s = 0; s < ps.S; ++s) server_ranks[s] = s;
  comm::PsClient client(data.get(), server_ranks, ps.ranges, ps.pieces);
  float* grads = AllocFloats(ps.count);
  float* params = AllocFloats(ps.count);
  MPI_Barrier(MPI_COMM_WORLD);
  for (int r = 0; r < rounds; ++r) {
    const double t0 = MPI_Wtime();
    Compute(compute_s);
    if (Arith())
      for (int64_t i = 0; i < ps.count; ++i) grads[i] = Value(w + 17 * r, i);
    PushHeader h;
    h.step = r;
    h.samples = 1 + w % 3;
    h.consumed = h.samples;
    auto ts = client.PushPull(h, grads, params);
    Check(ts.status(), "PushPull");
    PullHeader reply;
    Check(client.Wait(*ts, &reply), "PsClient::Wait");
    times.push_back(MPI_Wtime() - t0);
  }
  *hash = Arith() ? Hash(params, ps.count) : 0;
  FreeFloats(grads);
  FreeFloats(params);
  return times;
}

// ---- modes ----

int RunCheck(const Args& a) {
  const int64_t count = a.Int("count", 10007);
  const int per_host = static_cast<int>(a.Int("ranks-per-host", 2));
  auto made = comm::MakeMpiCommunicator(MPI_COMM_WORLD, count, Placement(Size(), per_host));
  Check(made.status(), "MakeMpiCommunicator");
  comm::Communicator& c = **made;
  std::vector<float> data(count);
  // The exact sum and a bound on fp32 rounding (every partial sum rounds).
  std::vector<double> exact(count), mag(count);
  for (int64_t i = 0; i < count; ++i)
    for (int r = 0; r < Size(); ++r) {
      exact[i] += Value(r, i);
      mag[i] += std::fabs(Value(r, i));
    }
  int failures = 0;
  for (const char* name : {"ring", "rd", "rabenseifner", "direct", "hier"}) {
    for (WireType wire : {WireType::kFloat32, WireType::kBFloat16}) {
      for (int64_t i = 0; i < count; ++i) data[i] = Value(Rank(), i);
      comm::AllreduceOptions opt;
      opt.algorithm = *comm::ParseAllreduceAlgorithm(name);
      opt.wire = wire;
      Check(c.Allreduce(data.data(), count, opt), "Allreduce");
      const uint64_t h = Hash(data.data(), count);
      const bool agree = Agree(h, true);
      // fp32: within n*eps of the sum of magnitudes; a 16-bit wire rounds
      // every handoff to 8 bits of mantissa.
      const double eps = wire == WireType::kFloat32 ? 0x1p-24 : 0x1p-8;
      bool within = true;
      for (int64_t i = 0; i < count; ++i)
        within &= std::fabs(data[i] - exact[i]) <= 2.0 * Size() * eps * mag[i] + 1e-30;
      failures += !agree || !within;
      if (Rank() == 0)
        std::printf("allreduce algo=%s wire=%s ranks=%d count=%lld hash=%016llx agree=%s bound=%s\n",
                    name, comm::WireTypeName(wire), Size(), static_cast<long long>(count),
                    static_cast<unsigned long long>(h), agree ? "yes" : "NO", within ? "ok" : "EXCEEDED");
    }
  }
  // A parameter-server round: 2 servers (1 with 2 ranks), two rounds.
  Args pa = a;
  pa.kv["servers"] = Size() >= 4 ? "2" : "1";
  pa.kv["piece-bytes"] = "4096";
  pa.kv["layers"] = "5";
  PsSetup ps = PlanPs(pa, count);
  uint64_t h = 0;
  RunPs(pa, ps, 2, 0, &h);
  const bool agree = Agree(h, Rank() >= ps.S);
  failures += !agree;
  // Workers hold the parameters; rank S prints.
  if (Rank() == ps.S)
    std::printf("ps servers=%d workers=%d count=%lld pieces=%zu rounds=2 hash=%016llx agree=%s\n", ps.S,
                ps.W, static_cast<long long>(count), ps.pieces.size(), static_cast<unsigned long long>(h),
                agree ? "yes" : "NO");
  std::fflush(stdout);
  int all = 0;
  MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  return all == 0 ? 0 : 1;
}

// Floats each rank reduces in one all-reduce of `count` floats on p ranks
// (the kernels' work, injected at `reduce_ns` per float, not overlapped).
double ReducedFloats(AllreduceAlgorithm algo, int p, int64_t count) {
  if (p <= 1) return 0;
  if (algo == AllreduceAlgorithm::kRecursiveDoubling) return std::ceil(std::log2(p)) * count;
  return static_cast<double>(count) * (p - 1) / p;
}

int RunAllreduce(const Args& a) {
  const int64_t count = a.Int("count", 1 << 20);
  const int iters = static_cast<int>(a.Int("iters", 3));
  const int per_host = static_cast<int>(a.Int("ranks-per-host", 1));
  const double compute_s = a.Real("compute-s", 0);
  const double reduce_ns = a.Real("reduce-ns", 0);
  auto algo = comm::ParseAllreduceAlgorithm(a.Get("algo", "ring"));
  Check(algo.status(), "--algo");
  const std::string wire_name = a.Get("wire", "fp32");
  const WireType wire = wire_name == "bf16" ? WireType::kBFloat16 : wire_name == "fp16" ? WireType::kFloat16 : WireType::kFloat32;
  auto made = comm::MakeMpiCommunicator(MPI_COMM_WORLD, count, Placement(Size(), per_host));
  Check(made.status(), "MakeMpiCommunicator");
  comm::Communicator& c = **made;
  float* data = AllocFloats(count);
  comm::AllreduceOptions opt;
  opt.algorithm = *algo;
  opt.wire = wire;
  const AllreduceAlgorithm ran = *algo == AllreduceAlgorithm::kAuto ? c.Choose(count, wire) : *algo;
  const double reduce_s = reduce_ns * 1e-9 * ReducedFloats(ran, Size(), count);
  std::vector<double> times;
  const int warmup = static_cast<int>(a.Int("warmup", 1));
  for (int it = 0; it < warmup + iters; ++it) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    Compute(compute_s);
    Check(c.Allreduce(data, count, opt), "Allreduce");
    Compute(reduce_s);
    if (it >= warmup) times.push_back(MPI_Wtime() - t0);
  }
  const std::vector<double> slow = Slowest(times);
  if (Rank() == 0)
    std::printf("result mode=allreduce algo=%s wire=%s ranks=%d ranks_per_host=%d count=%lld compute_s=%g "
                "reduce_s=%g median_s=%.6g\n",
                comm::AllreduceAlgorithmName(ran), comm::WireTypeName(wire), Size(), per_host,
                static_cast<long long>(count), compute_s, reduce_s, Median(slow));
  FreeFloats(data);
  return 0;
}

int RunPsMode(const Args& a) {
  const int64_t count = a.Int("count", 1 << 20);
  const int iters = static_cast<int>(a.Int("iters", 3));
  const int warmup = static_cast<int>(a.Int("warmup", 1));
  PsSetup ps = PlanPs(a, count);
  uint64_t h = 0;
  std::vector<double> t = RunPs(a, ps, warmup + iters, a.Real("compute-s", 0), &h);
  t.erase(t.begin(), t.begin() + std::min<size_t>(warmup, t.size()));
  // Workers' round times (servers pass 0).
  if (Rank() < ps.S) std::fill(t.begin(), t.end(), 0.0);
  const std::vector<double> slow = Slowest(t);
  if (Rank() == 0)
    std::printf("result mode=ps servers=%d workers=%d count=%lld pieces=%zu compute_s=%g apply_ns=%g median_s=%.6g\n",
                ps.S, ps.W, static_cast<long long>(count), ps.pieces.size(), a.Real("compute-s", 0),
                a.Real("apply-ns", 0), Median(slow));
  return 0;
}

// On this machine's unfolded memory: the all-reduce's reduction (AddInto)
// per float, what --reduce-ns should be; the server's sum and Adam step per
// float of its range and per input, what --apply-ns should be.
int RunCalibrate(const Args& a) {
  const int64_t n = a.Int("count", 4 << 20);
  const int k = 4;
  std::vector<std::vector<float>> in(k, std::vector<float>(n, 1.0f));
  std::vector<const float*> ptr;
  for (auto& v : in) ptr.push_back(v.data());
  std::vector<float> sum(n), params(n, 0.5f);
  proto::OptimizerSpec spec;
  auto opt = MakeOptimizer(spec, n, 1000);
  Check(opt.status(), "MakeOptimizer");
  std::vector<double> per, add;
  for (int rep = 0; rep < 5; ++rep) {
    // The all-reduce algorithms' fp32 reduction: acc += in.
    const auto a0 = std::chrono::steady_clock::now();
    comm::internal::AddInto(sum.data(), in[rep % k].data(), n);
    add.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a0).count() * 1e9 / n);
    const auto t0 = std::chrono::steady_clock::now();
    paramserver::AverageInOrder(ptr.data(), ptr.size(), n, 0.25f, sum.data());
    (*opt)->Step(params.data(), sum.data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    per.push_back(s * 1e9 / (static_cast<double>(n) * (k + 1)));
  }
  std::printf("result mode=calibrate reduce_ns=%.4g apply_ns=%.4g floats=%lld inputs=%d\n", Median(add),
              Median(per), static_cast<long long>(n), k);
  return 0;
}

}  // namespace
}  // namespace polis::scaling

int main(int argc, char** argv) {
  using namespace polis::scaling;
  MPI_Init(&argc, &argv);
  Args a;
  std::string mode = "check";
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0) {
      mode = s;
      continue;
    }
    const size_t eq = s.find('=');
    if (eq == std::string::npos) Die("argument '" + s + "': expected --key=value");
    a.kv[s.substr(2, eq - 2)] = s.substr(eq + 1);
  }
  // --waits=block (default): single-threaded mode, every wait one
  // MPI_Waitall (what the simulation needs); --waits=poll: Polis' normal
  // waits (spin, then back off), for real runs on shared cores, where
  // Open MPI's blocking wait would spin and starve the emulated hosts' TCP.
  const std::string waits = a.Get("waits", "block");
  if (waits != "block" && waits != "poll") Die("--waits must be block or poll, not '" + waits + "'");
  polis::comm::SetSingleThreaded(waits == "block");
  const std::string arithmetic = a.Get("arithmetic", "on");
  if (arithmetic != "on" && arithmetic != "off") Die("--arithmetic must be on or off, not '" + arithmetic + "'");
#ifdef POLIS_SMPI
  polis::comm::internal::SetArithmetic(arithmetic == "on");
#else
  if (arithmetic == "off") Die("--arithmetic=off is for the simulation build (polis-scaling-sim) only");
#endif
  if (arithmetic == "off" && mode == "check") Die("check compares sums: it needs --arithmetic=on");
  int rc = 0;
  if (mode == "check") {
    rc = RunCheck(a);
  } else if (mode == "allreduce") {
    rc = RunAllreduce(a);
  } else if (mode == "ps") {
    rc = RunPsMode(a);
  } else if (mode == "calibrate") {
    rc = Rank() == 0 ? RunCalibrate(a) : 0;
  } else {
    Die("unknown mode '" + mode + "'; known: check, allreduce, ps, calibrate");
  }
  MPI_Finalize();
  return rc;
}
