// polis-gpu-bench: the GPU device check's measurements (benchmarks/gpu/check.sh).
//
//  1. Trains the seed CNN (jobs/fashion_cnn.pbtxt) on Fashion-MNIST and the
//     bike-demand Transformer (jobs/bike_demand_transformer.pbtxt) on its
//     CSV, each for a fixed number of steps on one GPU with the CUDA backend
//     (CudaNetwork + CudaLoss + CudaOptimizer). Batches are staged on the
//     device before timing; each step (input copy, forward, loss, backward,
//     optimizer) is timed with CUDA events, and the median and p90 after
//     warm-up are reported. When a dataset is missing, synthetic data of
//     the same shape is used (and said so): a learnable target, so the
//     loss still has to fall.
//  2. A 1-rank NCCL all-reduce bandwidth sweep (algbw, busbw = algbw·2(n-1)/n),
//     verifying each size's result.
//
// What it times is verified: the training loss must fall from the first to
// the last step, and every all-reduce result is checked; failures exit 1.
//
//   build-gpu/benchmarks/polis-gpu-bench --steps 200 --warmup 20 --precision fp32
#include <google/protobuf/text_format.h>
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "common/comm/nccl_communicator.h"
#include "common/data/dataset.h"
#include "common/nn/cuda/cuda_network.h"
#include "common/nn/cuda/cuda_util.h"

namespace {

using namespace polis;
using nn::cuda::DeviceArray;

#define CHECK_OK(expr)                                                              \
  do {                                                                              \
    ::polis::Status _st = (expr);                                                   \
    if (!_st.ok()) {                                                                \
      std::fprintf(stderr, "polis-gpu-bench: %s -> %s\n", #expr, _st.ToString().c_str()); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)
#define CHECK_CUDA(expr) CHECK_OK([&]() -> ::polis::Status { POLIS_CUDA_CHECK(expr); return ::polis::Status::Ok(); }())

template <typename T>
T Value(StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "polis-gpu-bench: %s: %s\n", what, v.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*v);
}

proto::JobSpec ReadJob(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  proto::JobSpec job;
  if (!in || !google::protobuf::TextFormat::ParseFromString(text.str(), &job)) {
    std::fprintf(stderr, "polis-gpu-bench: cannot read job %s\n", path.c_str());
    std::exit(1);
  }
  return job;
}

double Percentile(std::vector<float> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

struct TrainResult {
  std::string name, data;
  int64_t batch = 0, params = 0;
  double median_ms = 0, p90_ms = 0, first_loss = 0, last_loss = 0;
  bool ok = false;
};

// Stages `stage` batches on the device (real data when the dataset opens,
// else synthetic) and trains for warmup + steps steps.
TrainResult Train(const std::string& name, const proto::JobSpec& job, nn::Shape synthetic_shape,
                  int64_t batch, int steps, int warmup, nn::cuda::Precision precision) {
  TrainResult r;
  r.name = name;
  r.batch = batch;
  const bool classes = job.model().loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY;
  auto ds = data::OpenJobDataset(job);
  nn::Shape shape = ds.ok() ? nn::Shape((*ds)->sample_shape()) : synthetic_shape;
  auto model = Value(nn::Model::Build(job.model(), shape), "model");
  const int64_t k = nn::ShapeElements(model.output_shape()), in = nn::ShapeElements(shape);
  const int64_t ylen = classes ? 1 : k;
  const int stage = 16;
  std::vector<float> x(stage * batch * in), y(stage * batch * ylen);
  if (ds.ok()) {
    r.data = "real (" + std::to_string((*ds)->size(data::Part::kTrain)) + " samples)";
    std::vector<int64_t> idx(stage * batch);
    std::mt19937_64 rng(job.training().seed());
    const int64_t n = (*ds)->size(data::Part::kTrain);
    for (auto& i : idx) i = static_cast<int64_t>(rng() % n);
    (*ds)->Gather(data::Part::kTrain, idx.data(), stage * batch, x.data(), y.data());
  } else {
    r.data = "synthetic (" + ds.status().message().substr(0, 60) + ")";
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (float& v : x) v = u(rng);
    for (int64_t s = 0; s < stage * batch; ++s) {
      // A learnable target: the class (or value) follows the mean input.
      double m = 0;
      for (int64_t i = 0; i < in; ++i) m += x[s * in + i];
      m /= in;
      const float t = static_cast<float>((m - 0.5) * std::sqrt(12.0 * in));
      for (int64_t j = 0; j < ylen; ++j)
        y[s * ylen + j] = classes ? static_cast<float>(std::clamp<int64_t>(std::lround((t + 2) * k / 4.0), 0, k - 1)) : t;
    }
  }
  const int64_t P = model.parameter_count();
  r.params = P;
  std::vector<float> params(P);
  model.InitParams(params.data(), job.training().seed());
  DeviceArray<float> dp, dg, dx, dy;
  CHECK_OK(dp.Allocate(P));
  CHECK_OK(dg.AllocateZeroed(P));
  CHECK_OK(dx.Allocate(static_cast<int64_t>(x.size())));
  CHECK_OK(dy.Allocate(static_cast<int64_t>(y.size())));
  CHECK_CUDA(cudaMemcpy(dp.get(), params.data(), sizeof(float) * P, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dx.get(), x.data(), sizeof(float) * x.size(), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dy.get(), y.data(), sizeof(float) * y.size(), cudaMemcpyHostToDevice));
  nn::cuda::CudaOptions opt;
  opt.precision = precision;
  auto net = Value(nn::cuda::CudaNetwork::Create(model, batch, dp.get(), dg.get(), true, opt), "network");
  auto loss = Value(nn::cuda::CudaLoss::Create(job.model(), batch, k), "loss");
  auto optimizer = Value(nn::cuda::CudaOptimizer::Create(job.optimizer(), P, steps + warmup), "optimizer");
  cudaStream_t s = net->stream();
  const int total = steps + warmup;
  std::vector<cudaEvent_t> ev(2 * total);
  for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
  for (int step = 0; step < total; ++step) {
    const int b = step % stage;
    CHECK_CUDA(cudaEventRecord(ev[2 * step], s));
    CHECK_CUDA(cudaMemcpyAsync(net->d_input(), dx.get() + b * batch * in, sizeof(float) * batch * in,
                               cudaMemcpyDeviceToDevice, s));
    CHECK_OK(net->Forward());
    CHECK_OK(loss->Compute(net->d_output(), dy.get() + b * batch * ylen, net->d_output_diff(),
                           1.f / batch, s));
    CHECK_OK(net->Backward());
    CHECK_OK(optimizer->Step(dp.get(), dg.get(), s));
    CHECK_CUDA(cudaEventRecord(ev[2 * step + 1], s));
    // The loss of the first and last steps (a host sync, outside the events).
    if (step == 0) r.first_loss = Value(loss->Read(s), "loss").loss_sum / batch;
    if (step == total - 1) r.last_loss = Value(loss->Read(s), "loss").loss_sum / batch;
  }
  CHECK_CUDA(cudaStreamSynchronize(s));
  CHECK_OK(net->TakeDataError());
  std::vector<float> ms;
  for (int step = warmup; step < total; ++step) {
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, ev[2 * step], ev[2 * step + 1]));
    ms.push_back(t);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  r.median_ms = Percentile(ms, 0.5);
  r.p90_ms = Percentile(ms, 0.9);
  // Steps cycle over `stage` staged batches, so the loss must fall.
  r.ok = std::isfinite(r.last_loss) && r.last_loss < r.first_loss;
  return r;
}

bool NcclSweep(int64_t max_bytes) {
  auto device = Value(comm::LocalDevice(MPI_COMM_WORLD), "local device");
  auto c = Value(comm::MakeNcclCommunicator(MPI_COMM_WORLD, device, max_bytes / 4), "NCCL");
  const int n = c->size();
  DeviceArray<float> d;
  CHECK_OK(d.Allocate(max_bytes / 4));
  bool ok = true;
  std::printf("\nNCCL all-reduce, %d rank(s), device %d, in place, fp32 sum\n", n, device);
  std::printf("| bytes | wire | time us | algbw GB/s | busbw GB/s | check |\n|---|---|---|---|---|---|\n");
  for (int64_t bytes = 8 << 10; bytes <= max_bytes; bytes *= 4) {
    for (comm::WireType wire : {comm::WireType::kFloat32, comm::WireType::kBFloat16}) {
      if (wire == comm::WireType::kBFloat16 && bytes != (8 << 20) && bytes != max_bytes) continue;
      const int64_t count = bytes / 4;
      comm::AllreduceOptions o;
      o.wire = wire;
      const int iters = bytes >= (64 << 20) ? 10 : 30;
      for (int i = 0; i < 3; ++i) CHECK_OK(c->Allreduce(d.get(), count, o));
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) CHECK_OK(c->Allreduce(d.get(), count, o));
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
      // Verify: ones sum to n on every element.
      // (Copies on the communicator's stream: it is not ordered with the
      // legacy default stream.)
      std::vector<float> ones(count, 1.f);
      CHECK_CUDA(cudaMemcpyAsync(d.get(), ones.data(), bytes, cudaMemcpyHostToDevice, c->stream()));
      CHECK_CUDA(cudaStreamSynchronize(c->stream()));
      CHECK_OK(c->Allreduce(d.get(), count, o));
      std::vector<float> got(count);
      CHECK_CUDA(cudaMemcpy(got.data(), d.get(), bytes, cudaMemcpyDeviceToHost));
      const bool good = std::all_of(got.begin(), got.end(), [&](float v) { return v == n; });
      ok = ok && good;
      const double algbw = bytes / sec / 1e9;
      std::printf("| %lld | %s | %.1f | %.2f | %.2f | %s |\n", static_cast<long long>(bytes),
                  comm::WireTypeName(wire), sec * 1e6, algbw, algbw * 2.0 * (n - 1) / n,
                  good ? "ok" : "WRONG");
    }
  }
  if (n == 1) std::printf("(1 rank: NCCL copies locally, busbw is 0 by definition)\n");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::string source_dir = POLIS_SOURCE_DIR, precision_name = "fp32";
  int steps = 200, warmup = 20;
  int64_t nccl_max_mib = 256;
  bool skip_nccl = false;
  CLI::App app{"polis-gpu-bench: GPU training steps and NCCL bandwidth"};
  app.add_option("--source-dir", source_dir, "Polis checkout (for jobs/)")->capture_default_str();
  app.add_option("--steps", steps, "timed steps per model")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  app.add_option("--precision", precision_name, "fp32, tf32 or bf16")->capture_default_str();
  app.add_option("--nccl-max-mib", nccl_max_mib, "largest all-reduce")->capture_default_str();
  app.add_flag("--skip-nccl", skip_nccl);
  CLI11_PARSE(app, argc, argv);
  const auto precision = Value(nn::cuda::ParsePrecision(precision_name), "--precision");
  std::string why;
  if (!nn::cuda::DeviceAvailable(&why)) {
    std::printf("polis-gpu-bench: SKIPPED: no CUDA device (%s)\n", why.c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("reproduce: %s --source-dir %s --steps %d --warmup %d --precision %s --nccl-max-mib %lld\n",
              argv[0], source_dir.c_str(), steps, warmup, precision_name.c_str(),
              static_cast<long long>(nccl_max_mib));
  std::printf("device: %s (sm_%d%d)\n\n", prop.name, prop.major, prop.minor);

  auto cnn_job = ReadJob(source_dir + "/jobs/fashion_cnn.pbtxt");
  auto tf_job = ReadJob(source_dir + "/jobs/bike_demand_transformer.pbtxt");
  std::vector<TrainResult> rows;
  rows.push_back(Train("seed CNN", cnn_job, {1, 28, 28}, cnn_job.training().batch_size(), steps,
                       warmup, precision));
  rows.push_back(Train("bike Transformer", tf_job, {168, 18}, tf_job.training().batch_size(), steps,
                       warmup, precision));
  bool ok = true;
  std::printf("| model | backend | precision | batch | params | step ms (median) | p90 ms | samples/s | loss first -> last | data |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    std::printf("| %s | polis cuda | %s | %lld | %lld | %.3f | %.3f | %.0f | %.4f -> %.4f%s | %s |\n",
                r.name.c_str(), precision_name.c_str(), static_cast<long long>(r.batch),
                static_cast<long long>(r.params), r.median_ms, r.p90_ms, r.batch * 1000.0 / r.median_ms,
                r.first_loss, r.last_loss, r.ok ? "" : " (DID NOT FALL)", r.data.c_str());
    ok = ok && r.ok;
  }
  if (!skip_nccl) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    ok = NcclSweep(nccl_max_mib << 20) && ok;
    MPI_Finalize();
  }
  return ok ? 0 : 1;
}
