// The three roles (coordinator, parameter servers, workers) run a whole job
// as threads of this process, over the in-process transport
// (common/comm/local_transport.h) instead of MPI: the roles see only the
// transport's interfaces, so the training protocol is tested here without
// mpirun — parameter servers (BSP, with clip_grad_norm across two servers;
// with secure aggregation) and all-reduce, each to a published model.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/comm/local_transport.h"
#include "common/env.h"
#include "common/job_spec.h"
#include "common/role.h"
#include "coordinator/coordinator.h"
#include "paramserver/server.h"
#include "tests/prereq.h"
#include "worker/worker.h"

namespace polis {
namespace {

constexpr char kModel[] = R"(
  name: "inprocess"
  model {
    layer { type: "Flatten" }
    layer { type: "Dense" activation: RELU dense_param { units: 32 } }
    layer { type: "Dense" dense_param { units: 10 } }
    loss: SOFTMAX_CROSS_ENTROPY
  }
  dataset { format: IDX dir: "fashion-mnist" train_limit: 1536 test_limit: 512 num_classes: 10 }
  optimizer { type: ADAM learning_rate: 0.003 }
)";

struct Outcome {
  std::vector<Status> status;  // by rank
  nlohmann::json result;       // the run's result.json
};

// Runs `job_text` with 1 coordinator, `servers` servers and `workers`
// workers as threads; the run directory and registry live under `dir`.
Outcome RunInProcess(const std::string& job_text, int servers, int workers, const std::string& dir) {
  const int world = 1 + servers + workers;
  Outcome out;
  auto job = ParseJobText(job_text + "registry { root: \"" + dir + "/registry\" }", "in-process test job");
  EXPECT_TRUE(job.ok()) << job.status().ToString();
  if (!job.ok()) return out;
  std::vector<int> worker_ranks;
  for (int w = 0; w < workers; ++w) worker_ranks.push_back(1 + servers + w);
  comm::LocalFabric fabric(world, worker_ranks);
  std::vector<RoleContext> ctx(world);
  auto model = CheckJob(*job);  // reads the dataset through, once
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  if (!model.ok()) return out;
  for (int r = 0; r < world; ++r) {
    ctx[r].job = *job;
    ctx[r].model = *model;
    ctx[r].transport = fabric.transport(r);
    ctx[r].ctrl = ctx[r].transport->control();
    ctx[r].data = ctx[r].transport->data();
    ctx[r].rank = r;
    ctx[r].world = world;
    ctx[r].servers = servers;
    ctx[r].workers = workers;
    ctx[r].run_dir = dir + "/run";
    ctx[r].train_samples = job->spec.dataset().train_limit();
    ctx[r].privacy_key = privacy::KeyFromNumber("in-process test job", 11);
  }
  out.status.resize(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      if (r == 0) {
        coordinator::CoordinatorOptions options;
        options.monitor_listen = "";
        out.status[r] = coordinator::RunCoordinator(ctx[r], options);
      } else if (ctx[r].is_server()) {
        out.status[r] = paramserver::RunServer(ctx[r]);
      } else {
        out.status[r] = worker::RunWorker(ctx[r]);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::ifstream in(dir + "/run/result.json");
  if (in) out.result = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return out;
}

bool HaveFashionMnist() {
  return std::filesystem::exists(env::FashionMnistDir() + "/train-images-idx3-ubyte.gz");
}

std::string FreshDir(const std::string& name) {
  const std::string dir = testing::TempDir() + "polis-inprocess-" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void ExpectTrainedAndPublished(const Outcome& out, double min_accuracy = 0.6) {
  for (size_t r = 0; r < out.status.size(); ++r) EXPECT_TRUE(out.status[r].ok()) << "rank " << r << ": " << out.status[r].ToString();
  ASSERT_FALSE(out.status.empty());
  ASSERT_TRUE(out.result.is_object()) << "no result.json";
  EXPECT_EQ(out.result.value("state", ""), "done") << out.result.dump();
  EXPECT_EQ(out.result.value("epochs", 0), 2) << out.result.dump();
  // 1536 training images, 2 epochs of a small dense network: well above
  // chance (0.1); the full job's bar is the integration tests'.
  EXPECT_GT(out.result.value("test_accuracy", 0.0), min_accuracy) << out.result.dump();
  EXPECT_EQ(out.result.value("version", 0), 1) << out.result.dump();
}

TEST(InProcessJob, ParameterServersBspWithClippingAcrossTwoServers) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed";
  const std::string dir = FreshDir("ps");
  Outcome out = RunInProcess(std::string(kModel) + R"(
      sync { mode: PARAMETER_SERVER servers: 2 consistency: BSP }
      training { batch_size: 32 epochs: 2 seed: 7 clip_grad_norm: 1.0 })", 2, 2, dir);
  ExpectTrainedAndPublished(out);
}

// privacy.secure_aggregation with 3 workers (masks of both signs) on 2
// servers: the key exchange through the coordinator, masked pushes, and
// 4 shards for 3 workers, so one worker pushes masked zeros while another
// finishes the epoch.
TEST(InProcessJob, ParameterServersBspWithSecureAggregation) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed";
  const std::string dir = FreshDir("secagg");
  Outcome out = RunInProcess(std::string(kModel) + R"(
      sync { mode: PARAMETER_SERVER servers: 2 consistency: BSP }
      training { batch_size: 32 epochs: 2 seed: 7 shard_size: 384 clip_grad_norm: 1.0 }
      privacy { secure_aggregation: true })", 2, 3, dir);
  ExpectTrainedAndPublished(out);
}

TEST(InProcessJob, AllReduce) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed";
  const std::string dir = FreshDir("allreduce");
  Outcome out = RunInProcess(std::string(kModel) + R"(
      sync { mode: ALLREDUCE servers: 0 }
      training { batch_size: 32 epochs: 2 seed: 7 })", 0, 2, dir);
  ExpectTrainedAndPublished(out);
}

// DP-SGD (docs/design/privacy.md) in both synchronisation modes: every
// planned step is taken and accounted; result.json and the published
// model's metadata carry the same guarantee, within the target.
void ExpectPrivateModel(const Outcome& out, const std::string& dir, double target_epsilon) {
  // 48 noisy steps of 64 expected examples: well above chance (0.1; the
  // same job drowned in noise below stays near it).
  ExpectTrainedAndPublished(out, 0.35);
  ASSERT_TRUE(out.result.contains("privacy")) << out.result.dump();
  const nlohmann::json& p = out.result["privacy"];
  // 1536 samples, 2 workers × 32 expected a step: 24 steps an epoch.
  EXPECT_EQ(p.value("planned_steps", 0), 48) << p.dump();
  EXPECT_EQ(p.value("steps", 0), 48) << p.dump();
  EXPECT_LE(p.value("epsilon", 1e9), target_epsilon) << p.dump();
  EXPECT_GT(p.value("epsilon", 0.0), 0.9 * target_epsilon) << p.dump();
  EXPECT_EQ(p.value("sampler", ""), "poisson");
  std::ifstream meta(dir + "/registry/inprocess/1/metadata.json");
  ASSERT_TRUE(meta.good()) << "no metadata.json for the published version";
  const auto m = nlohmann::json::parse(meta, nullptr, false);
  ASSERT_TRUE(m.contains("privacy")) << m.dump();
  EXPECT_DOUBLE_EQ(m["privacy"].value("epsilon", 0.0), p.value("epsilon", 1.0));
  EXPECT_EQ(m["privacy"].value("steps", 0), 48);
}

constexpr char kDpBlock[] = " privacy { target_epsilon: 8 delta: 1e-4 max_grad_norm: 1.0 }";

void RunPrivateJob(const std::string& name, const std::string& sync, int servers,
                   const std::string& privacy = kDpBlock) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed";
  const std::string dir = FreshDir(name);
  Outcome out = RunInProcess(std::string(kModel) + privacy + sync + " training { batch_size: 32 epochs: 2 seed: 7 }",
                             servers, 2, dir);
  ExpectPrivateModel(out, dir, 8);
}

TEST(InProcessJob, DpSgdParameterServersBsp) {
  RunPrivateJob("dp-ps", "sync { mode: PARAMETER_SERVER servers: 2 consistency: BSP }", 2);
}

// Combined with secure aggregation: each worker adds its share of the noise
// to its masked pushes; the servers decode the sum and add none.
TEST(InProcessJob, DpSgdWithSecureAggregation) {
  RunPrivateJob("dp-secagg", "sync { mode: PARAMETER_SERVER servers: 2 consistency: BSP }", 2,
                " privacy { target_epsilon: 8 delta: 1e-4 max_grad_norm: 1.0 secure_aggregation: true }");
}

TEST(InProcessJob, DpSgdAllReduce) {
  RunPrivateJob("dp-allreduce", "sync { mode: ALLREDUCE servers: 0 verify_replicas: true }", 0);
}

// The noise is really added: with σ = 300 the same job learns nothing.
TEST(InProcessJob, DpSgdNoiseDrownsTheGradient) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed";
  const std::string dir = FreshDir("dp-noise");
  Outcome out = RunInProcess(std::string(kModel) + R"(
      privacy { noise_multiplier: 300 delta: 1e-4 max_grad_norm: 1.0 }
      sync { mode: ALLREDUCE servers: 0 }
      training { batch_size: 32 epochs: 2 seed: 7 })", 0, 2, dir);
  for (size_t r = 0; r < out.status.size(); ++r) EXPECT_TRUE(out.status[r].ok()) << out.status[r].ToString();
  ASSERT_TRUE(out.result.is_object());
  EXPECT_LT(out.result.value("test_accuracy", 1.0), 0.45) << out.result.dump();
  EXPECT_LT(out.result["privacy"].value("epsilon", 1.0), 0.1) << out.result.dump();
}

// Four synchronous workers and 13 default shards (16 batches each): with
// fixed shards one worker took a fourth shard and trained alone for 16
// steps at the end of every epoch, each a full Adam step on a quarter of the
// global batch just before the evaluation (test accuracy on Fashion-MNIST
// 0.01-0.03 below PyTorch DDP's). Shards shrink near the end, so the
// workers run out of data within a step of each other.
TEST(InProcessJob, AllReduceFourWorkersEndEpochsTogether) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed";
  const std::string dir = FreshDir("allreduce4");
  std::string job = std::string(kModel) + R"(
      sync { mode: ALLREDUCE servers: 0 }
      training { batch_size: 8 epochs: 2 seed: 7 })";
  job.replace(job.find("train_limit: 1536"), 17, "train_limit: 1664");  // 13 shards of 128
  Outcome out = RunInProcess(job, 0, 4, dir);
  ExpectTrainedAndPublished(out);
  std::ifstream metrics(dir + "/run/metrics.jsonl");
  int epochs = 0;
  for (std::string line; std::getline(metrics, line);) {
    auto m = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!m.is_object() || !m.contains("steps")) continue;
    ++epochs;
    EXPECT_EQ(m.value("train_samples", 0), 1664) << line;
    // 1664 samples / (4 workers x 8) = 52 full steps; fixed shards took 64.
    EXPECT_LE(m.value("steps", 0), 53) << line;
    auto per_worker = m.value("worker_train_samples", std::vector<int64_t>{});
    ASSERT_EQ(per_worker.size(), 4u) << line;
    const auto [lo, hi] = std::minmax_element(per_worker.begin(), per_worker.end());
    EXPECT_LE(*hi - *lo, 8) << "workers' samples differ by more than a batch: " << line;
  }
  EXPECT_EQ(epochs, 2);
}

}  // namespace
}  // namespace polis
