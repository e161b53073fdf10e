// Integration: Polis under a multi-node Slurm on an emulated cluster
// (launch/cluster/emucluster up --slurm: one network namespace per host,
// slurmctld on the bridge, one slurmd per host inside its namespace),
// started and torn down by each test. `polis-run --slurm --nodes 3` places
// the roles across the allocation, trains and publishes; a job stopped by
// the time-limit warning and requeued while its first node is drained
// resumes on other nodes with every sample trained exactly once. Skips with
// emucluster's reason where namespaces cannot be made; fails under CI when
// a tool the project installs (iproute2, slurm-wlm, munge) is missing.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "common/checkpoint.h"
#include "common/data/shard_plan.h"
#include "common/fs.h"
#include "tests/integration/emulated_cluster.h"
#include "tests/integration/shell.h"
#include "tests/prereq.h"

namespace polis {
namespace {

using namespace polis::it;
using Clock = std::chrono::steady_clock;

std::string ReadOrEmpty(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : "";
}

// KEY=VALUE from `scontrol show job` output.
std::string Field(const std::string& text, const std::string& key) {
  const size_t at = text.find(" " + key + "=");
  if (at == std::string::npos) return "";
  const size_t from = at + key.size() + 2;
  return text.substr(from, text.find_first_of(" \n", from) - from);
}

class MultiNodeSlurm : public FashionJobTest {
 protected:
  void SetUp() override {
    FashionJobTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // Four hosts with Slurm: nodes h1..h4, 2 CPUs each.
    cluster_ = std::make_unique<EmulatedCluster>(dir_ + "/cluster", 4, "--slots 2 --slurm");
    POLIS_REQUIRE_CLUSTER_UP(cluster_);
  }
  void TearDown() override {
    cluster_.reset();
    FashionJobTest::TearDown();
  }
  // polis-run --slurm; returns the job id ("" on failure, reported).
  std::string Submit(const std::string& env, const std::string& options) {
    ShellRun r = Shell(env + cluster_->slurm_env() + "POLIS_NO_BUILD=1 " + PolisRun("--slurm " + options));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const std::string marker = "Submitted batch job ";
    const size_t at = r.output.find(marker);
    if (at == std::string::npos) {
      ADD_FAILURE() << "no job id in: " << r.output;
      return "";
    }
    return r.output.substr(at + marker.size(), r.output.find_first_of(" \n", at + marker.size()) - at - marker.size());
  }
  std::string Job(const std::string& id) { return Shell(cluster_->slurm_env() + "scontrol show job " + id).output; }
  // Polls the job until `done` says so or the deadline passes; the last `scontrol show job`.
  std::string WaitFor(const std::string& id, int seconds, const std::function<bool(const std::string&)>& done) {
    const auto deadline = Clock::now() + std::chrono::seconds(seconds);
    std::string info;
    while (Clock::now() < deadline) {
      info = Job(id);
      if (done(info)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return info;
  }
  static bool Ended(const std::string& info) {
    const std::string s = Field(info, "JobState");
    return s == "COMPLETED" || s == "FAILED" || s == "CANCELLED" || s == "TIMEOUT" || s == "NODE_FAIL";
  }
  std::unique_ptr<EmulatedCluster> cluster_;
};

// coordinator.json's placement: rank -> host.
std::vector<std::string> PlacedHosts(const std::string& run_dir) {
  std::vector<std::string> hosts;
  const nlohmann::json coordinator = ReadJson(run_dir + "/coordinator.json");
  for (const auto& p : coordinator["placement"]) hosts.push_back(p["host"]);
  return hosts;
}

TEST_F(MultiNodeSlurm, TrainsAndPublishesAcrossThreeNodes) {
  const std::string run = dir_ + "/run";
  const std::string id =
      Submit("", "--nodes 3 --net " + cluster_->subnet() + " --workers 2 --servers 2 --epochs 2 --registry " + dir_ +
                     "/registry --run-dir " + run + " " + kSrc +
                     "/jobs/fashion_cnn.pbtxt -- --train-limit 6000 --test-limit 2000");
  ASSERT_FALSE(id.empty());
  const std::string info = WaitFor(id, 400, Ended);
  const std::string out = ReadOrEmpty(run + "/slurm-" + id + ".out");
  ASSERT_EQ(Field(info, "JobState"), "COMPLETED") << info << out << ReadOrEmpty(run + "/stderr.log") << cluster_->slurm_logs();
  EXPECT_EQ(Field(info, "NodeList"), "h[1-3]") << info;
  // The table before training; the coordinator on the first node, a server
  // on each of the others, the workers in the free slots (Slurm gives the
  // 5 tasks as 2, 2 and 1 per node).
  EXPECT_NE(out.find("rank  role"), std::string::npos) << out;
  const auto& a = cluster_->addresses();
  EXPECT_EQ(PlacedHosts(run), (std::vector<std::string>{a[0], a[1], a[2], a[0], a[1]}));
  const auto coordinator = ReadJson(run + "/coordinator.json");
  EXPECT_EQ(coordinator["address"].get<std::string>().rfind("http://" + a[0] + ":", 0), 0u) << coordinator.dump();
  // Trained and published.
  const auto result = ReadJson(run + "/result.json");
  EXPECT_EQ(result.value("state", ""), "done") << result.dump();
  EXPECT_EQ(result["history"].size(), 2u) << result.dump();
  EXPECT_GT(result.value("test_accuracy", 0.0), 0.70) << result.dump();
  EXPECT_EQ(result.value("version", 0), 1) << result.dump();
  ShellRun verify = Shell(kBin + "/registry/polis-registry verify --root " + dir_ + "/registry fashion_cnn 1");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
}

// The time-limit warning on a 3-node job: the coordinator checkpoints and
// stops, the batch script requeues the job; with h1 drained meanwhile, the
// job comes back on h2..h4 and resumes from that checkpoint. The
// interrupted epoch's samples, as the model holds them (the checkpoint's
// consumed positions plus what the second attempt's workers trained), are
// each trained exactly once.
TEST_F(MultiNodeSlurm, RequeuedOnOtherNodesResumesExactlyOnce) {
  const std::string job = JobVariant(dir_, "job.pbtxt", {{"training { batch_size: 32 epochs: 5 seed: 42 }",
                                                          "training { batch_size: 32 epochs: 2 seed: 42 "
                                                          "checkpoint_every_steps: 10 keep_checkpoints: 100 }"}});
  const std::string run = dir_ + "/run", logs = dir_ + "/samples";
  Shell("mkdir -p " + logs);
  const std::string id = Submit("POLIS_TEST_SLOW_WORKER=0:40 POLIS_TEST_SAMPLE_LOG=" + logs + " ",
                                "--nodes 3 --net " + cluster_->subnet() + " --workers 2 --servers 1 --registry " +
                                    dir_ + "/registry --run-dir " + run + " " + job +
                                    " -- --train-limit 3000 --test-limit 500");
  ASSERT_FALSE(id.empty());
  const std::string out_file = run + "/slurm-" + id + ".out";

  // After the first checkpoint: drain h1, then warn the batch shell as the
  // time limit would.
  const auto deadline = Clock::now() + std::chrono::seconds(240);
  bool checkpointed = false;
  while (Clock::now() < deadline && !checkpointed) {
    std::vector<std::string> skipped;
    checkpointed = PathExists(run + "/checkpoints") && FindLatestCheckpoint(run, &skipped).ok();
    if (Ended(Job(id))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(checkpointed) << "no checkpoint:\n" << Job(id) << ReadOrEmpty(out_file) << ReadOrEmpty(run + "/stderr.log");
  const auto& a = cluster_->addresses();
  EXPECT_EQ(PlacedHosts(run), (std::vector<std::string>{a[0], a[1], a[0], a[2]}));
  ASSERT_EQ(Shell(cluster_->slurm_env() + "scontrol update nodename=h1 state=drain reason=polis-test").exit_code, 0);
  ASSERT_EQ(Shell(cluster_->slurm_env() + "scancel --signal=USR1 --batch " + id).exit_code, 0);

  // The first attempt's sample logs: those there when the script requeues
  // (its job step has ended; the next start is seconds away).
  std::set<std::string> first_attempt;
  WaitFor(id, 120, [&](const std::string& info) {
    return ReadOrEmpty(out_file).find("requeueing job") != std::string::npos || Ended(info);
  });
  ASSERT_NE(ReadOrEmpty(out_file).find("requeueing job"), std::string::npos) << Job(id) << ReadOrEmpty(out_file);
  {
    std::istringstream names(Shell("ls " + logs).output);
    for (std::string name; std::getline(names, name);) first_attempt.insert(name);
  }
  EXPECT_EQ(ReadJson(run + "/result.json").value("state", ""), "stopped");

  const std::string info = WaitFor(id, 400, [](const std::string& i) { return Ended(i) && Field(i, "Restarts") == "1"; });
  const std::string out = ReadOrEmpty(out_file);
  ASSERT_EQ(Field(info, "JobState"), "COMPLETED") << info << out << ReadOrEmpty(run + "/stderr.log") << cluster_->slurm_logs();
  EXPECT_EQ(Field(info, "Restarts"), "1") << info;
  EXPECT_EQ(Field(info, "NodeList"), "h[2-4]") << info;
  EXPECT_EQ(PlacedHosts(run), (std::vector<std::string>{a[1], a[2], a[1], a[3]}));

  // The checkpoint the second attempt resumed from.
  const std::string marker = "polis: resuming from ";
  const size_t at = out.find(marker);
  ASSERT_NE(at, std::string::npos) << out;
  const std::string from = out.substr(at + marker.size(), out.find(" (", at) - at - marker.size());
  auto resumed = ReadManifest(from);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  const int epoch = resumed->epoch_complete ? resumed->epoch + 1 : resumed->epoch;
  ASSERT_LT(epoch, 2) << "the job had finished training before the warning";
  std::map<int64_t, int> seen;
  if (!resumed->epoch_complete) {
    const auto perm = data::EpochPermutation(42, epoch, 3000);
    for (const auto& range : resumed->consumed)
      for (int64_t p = range.begin; p < range.end; ++p) ++seen[perm[p]];
  }
  std::istringstream names(Shell("ls " + logs).output);
  int second_attempt_logs = 0;
  for (std::string name; std::getline(names, name);) {
    if (first_attempt.count(name)) continue;
    ++second_attempt_logs;
    std::istringstream lines(ReadOrEmpty(logs + "/" + name));
    int e = -1;
    long long index = -1;
    for (std::string line; std::getline(lines, line);)
      if (std::sscanf(line.c_str(), "%d %lld", &e, &index) == 2 && e == epoch) ++seen[index];
  }
  EXPECT_EQ(second_attempt_logs, 2);
  ASSERT_EQ(seen.size(), 3000u);
  for (const auto& [index, count] : seen) ASSERT_EQ(count, 1) << "sample " << index;

  const auto result = ReadJson(run + "/result.json");
  EXPECT_EQ(result.value("state", ""), "done") << result.dump();
  EXPECT_EQ(result["history"].size(), 2u) << result.dump();
  EXPECT_EQ(result.value("version", 0), 1) << result.dump();
}

}  // namespace
}  // namespace polis
