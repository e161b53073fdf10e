// The three roles (coordinator, parameter servers, workers) run a whole job
// as threads of this process, over the in-process transport
// (common/comm/local_transport.h) instead of MPI: the roles see only the
// transport's interfaces, so the training protocol is tested here without
// mpirun — parameter servers (BSP, with clip_grad_norm across two servers;
// with secure aggregation) and all-reduce, each to a published model.
#include <gtest/gtest.h>

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

void ExpectTrainedAndPublished(const Outcome& out) {
  for (size_t r = 0; r < out.status.size(); ++r) EXPECT_TRUE(out.status[r].ok()) << "rank " << r << ": " << out.status[r].ToString();
  ASSERT_FALSE(out.status.empty());
  ASSERT_TRUE(out.result.is_object()) << "no result.json";
  EXPECT_EQ(out.result.value("state", ""), "done") << out.result.dump();
  EXPECT_EQ(out.result.value("epochs", 0), 2) << out.result.dump();
  // 1536 training images, 2 epochs of a small dense network: well above
  // chance (0.1); the full job's bar is the integration tests'.
  EXPECT_GT(out.result.value("test_accuracy", 0.0), 0.6) << out.result.dump();
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

}  // namespace
}  // namespace polis
