// Secure aggregation on the parameter servers with real processes
// (docs/design/privacy.md): a masked BSP job trains the model a plain job
// trains, within the fixed-point rounding; what a server receives of one
// worker is uncorrelated with that worker's gradient; a worker killed
// mid-round leaves no mask in the model, and the run resumes from its
// checkpoint.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "common/artifact/artifact.h"
#include "common/checkpoint.h"
#include "common/comm/key_ranges.h"
#include "tests/integration/shell.h"
#include "tests/prereq.h"

namespace polis {
namespace {

using namespace polis::it;
using json = nlohmann::json;

class SecAgg : public FashionJobTest {};

constexpr char kTraining[] = "training { batch_size: 32 epochs: 5 seed: 42 }";
constexpr char kAdam[] = "optimizer { type: ADAM learning_rate: 0.001 beta1: 0.9 beta2: 0.999 epsilon: 1e-7 }";
constexpr char kSync[] = "sync { mode: PARAMETER_SERVER servers: 1 consistency: BSP }";

template <typename T>
std::vector<T> ReadRaw(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return {};
  std::vector<T> v(text->size() / sizeof(T));
  std::memcpy(v.data(), text->data(), v.size() * sizeof(T));
  return v;
}

// Pearson correlation of a and b.
template <typename A, typename B>
double Correlation(const std::vector<A>& a, const std::vector<B>& b) {
  double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
  const double n = static_cast<double>(a.size());
  for (size_t k = 0; k < a.size(); ++k) {
    const double x = a[k], y = b[k];
    sx += x, sy += y, sxx += x * x, syy += y * y, sxy += x * y;
  }
  return (sxy - sx * sy / n) / std::sqrt((sxx - sx * sx / n) * (syy - sy * sy / n));
}

// Two epochs of 3 steps on 2 workers and 2 servers, SGD so that a
// difference in the summed gradient shows in the parameters linearly. With
// 160 samples in 1-batch shards one worker runs out of data before the
// other in each epoch and pushes masked zeros in the last round, and the
// epoch ends in a round of epoch-end pushes: both are paths the masks must
// cancel on. The masked run's parameters match the plain run's within the
// fixed-point rounding: per step lr x W/(2 scale) / samples (scale 2^18 for
// 2 workers x 32 x privacy.secure_aggregation_bound 100: 3e-9 a step), with
// room for float rounding, far below what one uncancelled mask would do
// (O(1) per coordinate). Few steps on purpose: over many steps a ReLU
// network with zero-initialised biases amplifies any difference (a bias
// near 0 flips every background pixel's unit), whatever its source.
TEST_F(SecAgg, MaskedPushesTrainThePlainModelAndAServerSeesNoGradient) {
  const std::string args = "--workers 2 --servers 2 --epochs 2 -- --train-limit 160 --test-limit 100";
  auto run = [&](const std::string& name, const std::string& privacy) {
    const std::string job = JobVariant(dir_, name + ".pbtxt",
                                       {{kAdam, "optimizer { type: SGD learning_rate: 0.05 }"},
                                        {kTraining, "training { batch_size: 32 epochs: 5 seed: 42 shard_size: 32 }"},
                                        {kSync, std::string("sync { mode: PARAMETER_SERVER servers: 2 consistency: BSP }") + privacy}});
    const std::string cap = dir_ + "/" + name + "-capture";
    Shell("mkdir -p " + cap);
    ShellRun r = Shell("POLIS_TEST_PUSH_CAPTURE=" + cap + ":1 " +
                       PolisRun("--registry " + dir_ + "/registry --run-dir " + dir_ + "/" + name + " " + job + " " + args));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r;
  };
  run("plain", "");
  ShellRun masked = run("masked", "\nprivacy { secure_aggregation: true }");
  auto plain_model = ReadArtifactFile(dir_ + "/plain/model.polis");
  auto masked_model = ReadArtifactFile(dir_ + "/masked/model.polis");
  ASSERT_TRUE(plain_model.ok()) << plain_model.status().ToString();
  ASSERT_TRUE(masked_model.ok()) << masked_model.status().ToString() << masked.output;
  const auto& a = plain_model->weights;
  const auto& b = masked_model->weights;
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t k = 0; k < a.size(); ++k) worst = std::max(worst, std::abs(static_cast<double>(a[k]) - b[k]));
  EXPECT_LE(worst, 1e-6) << "largest parameter difference, plain vs masked";
  std::printf("largest parameter difference, plain vs masked: %.3g\n", worst);
  auto pr = ReadJson(dir_ + "/plain/result.json"), mr = ReadJson(dir_ + "/masked/result.json");
  ASSERT_EQ(mr["history"].size(), 2u) << mr.dump();
  EXPECT_NEAR(mr["history"][1]["test_loss"].get<double>(), pr["history"][1]["test_loss"].get<double>(), 1e-4);

  // Step 1: each server's capture of worker 0's push against worker 0's
  // gradient over that server's key range. Plain pushes are the gradient
  // (the capture works); masked ones, read as signed fixed point, are
  // uncorrelated with it: |r| within 5/sqrt(n) of zero.
  const auto ranges = comm::PartitionByBytes(static_cast<int64_t>(a.size()), 2);
  for (const std::string name : {"plain", "masked"}) {
    const std::string cap = dir_ + "/" + name + "-capture";
    const auto grad = ReadRaw<float>(cap + "/worker-0.f32");
    ASSERT_EQ(grad.size(), a.size()) << name;
    for (int s = 0; s < 2; ++s) {
      const std::vector<float> truth(grad.begin() + ranges[s].begin, grad.begin() + ranges[s].end);
      const std::string file = cap + "/server-" + std::to_string(s) + "-worker-0.bin";
      if (name == "plain") {
        const auto seen = ReadRaw<float>(file);
        ASSERT_EQ(seen.size(), truth.size());
        EXPECT_EQ(seen, truth) << "a plain push is the gradient";
      } else {
        const auto raw = ReadRaw<uint32_t>(file);
        ASSERT_EQ(raw.size(), truth.size());
        std::vector<int32_t> seen(raw.begin(), raw.end());
        const double r = Correlation(seen, truth), bound = 5 / std::sqrt(static_cast<double>(truth.size()));
        EXPECT_LT(std::abs(r), bound) << "server " << s << " capture vs worker 0's gradient";
        std::printf("server %d: correlation of worker 0's masked push with its gradient %.5f (bound %.5f, n %zu)\n",
                    s, r, bound, truth.size());
      }
    }
  }
}

// A worker SIGKILLed mid-epoch after a checkpoint: the round it was in
// never completes on any server (a server applies a masked round only with
// all W pushes in), mpirun ends the attempt, and polis-run resumes from the
// checkpoint with new key pairs. The job finishes, and the model holds no
// mask: with SGD (lr 0.05) one round holding a mask would move every
// coordinate by about lr x 2^31 / (W x scale x samples) = 6, far past any
// trained weight.
TEST_F(SecAgg, AWorkerLostMidRoundResumesFromTheCheckpoint) {
  const std::string job = JobVariant(dir_, "job.pbtxt",
                                     {{kAdam, "optimizer { type: SGD learning_rate: 0.05 }"},
                                      {kTraining, "training { batch_size: 32 epochs: 1 seed: 42 checkpoint_every_steps: 5 }"},
                                      {kSync, "sync { mode: PARAMETER_SERVER servers: 2 consistency: BSP }\n"
                                              "privacy { secure_aggregation: true }"}});
  const std::string run = dir_ + "/run";
  ShellRun r;
  std::thread t([&] {
    r = Shell("POLIS_TEST_SLOW_WORKER=0:20 " +
              PolisRun("--max-restarts 1 --workers 2 --servers 2 --registry " + dir_ + "/registry --run-dir " + run +
                       " " + job + " -- --train-limit 1000 --test-limit 300"));
  });
  int victim = -1;
  for (int i = 0; i < 1200 && victim <= 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::vector<std::string> skipped;
    if (PathExists(run + "/checkpoints") && FindLatestCheckpoint(run, &skipped).ok()) victim = RankPids(run, 5)[4];
  }
  ASSERT_GT(victim, 0) << "no checkpoint appeared";
  kill(victim, SIGKILL);
  t.join();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("rank 4 (worker) exited on signal 9 (Killed)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("finished after 1 restart(s)"), std::string::npos) << r.output;
  auto result = ReadJson(run + "/result.json");
  EXPECT_EQ(result.value("state", ""), "done") << result.dump();
  ASSERT_FALSE(result["history"].empty()) << result.dump();
  // Untrained: ln 10 = 2.30; weights of size 6 would give a loss far above.
  EXPECT_LT(result["history"].back()["test_loss"].get<double>(), 2.5) << result.dump();
  auto model = ReadArtifactFile(run + "/model.polis");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  float biggest = 0;
  for (float v : model->weights) biggest = std::max(biggest, std::abs(v));
  EXPECT_LT(biggest, 5.0f) << "a parameter far from a trained CNN's";
}

}  // namespace
}  // namespace polis
