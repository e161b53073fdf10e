// The kill matrix in short (benchmarks/chaos.sh is the long one): a job
// under `polis-run --max-restarts` that loses a rank restarts by itself,
// names the failure, trains every sample exactly once and publishes a
// version that verifies; a job that keeps failing gives up after its
// budget, naming the last failure.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "tests/prereq.h"

#include "common/artifact/artifact.h"
#include "common/checkpoint.h"
#include "common/data/shard_plan.h"
#include "tests/integration/shell.h"

namespace polis {
namespace {

using namespace polis::it;
using json = nlohmann::json;

std::string ReadOrEmpty(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : "";
}

class Chaos : public FashionJobTest {
 protected:
  std::vector<json> Restarts(const std::string& run) {
    std::vector<json> lines;
    std::istringstream in(ReadOrEmpty(run + "/restarts.jsonl"));
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line, nullptr, false));
    return lines;
  }
};

// A worker SIGKILLed mid-epoch, after a checkpoint: polis-run names it,
// resumes from that checkpoint and the job ends with exit 0. The epoch's
// samples are counted as the model holds them: the checkpoint's consumed
// ranges plus what the second attempt's workers logged (samples the killed
// attempt trained after the checkpoint are not in the model).
TEST_F(Chaos, KilledWorkerRestartsByItselfExactlyOnce) {
  const std::string job = JobVariant(dir_, "job.pbtxt", {{"training { batch_size: 32 epochs: 5 seed: 42 }",
                                                          "training { batch_size: 32 epochs: 1 seed: 42 "
                                                          "checkpoint_every_steps: 10 keep_checkpoints: 100 }"}});
  const std::string run = dir_ + "/run", logs = dir_ + "/samples", registry = dir_ + "/registry";
  Shell("mkdir -p " + logs);
  ShellRun r;
  std::thread t([&] {
    r = Shell("POLIS_TEST_SLOW_WORKER=0:10 POLIS_TEST_SAMPLE_LOG=" + logs + " " +
              PolisRun("--max-restarts 2 --workers 2 --servers 1 --registry " + registry + " --run-dir " + run + " " +
                       job + " -- --train-limit 3000 --test-limit 500"));
  });
  std::vector<int> first_pids;
  for (int i = 0; i < 600 && first_pids.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::vector<std::string> skipped;
    if (PathExists(run + "/checkpoints") && FindLatestCheckpoint(run, &skipped).ok()) {
      first_pids = RankPids(run, 4);
      if (first_pids[3] <= 0) first_pids.clear();
    }
  }
  ASSERT_FALSE(first_pids.empty()) << "no checkpoint appeared";
  kill(first_pids[3], SIGKILL);
  t.join();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("rank 3 (worker) exited on signal 9 (Killed)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("finished after 1 restart(s)"), std::string::npos) << r.output;

  auto restarts = Restarts(run);
  ASSERT_EQ(restarts.size(), 1u) << r.output;
  EXPECT_EQ(restarts[0].value("attempt", 0), 1) << restarts[0].dump();
  EXPECT_EQ(restarts[0].value("action", ""), "resume") << restarts[0].dump();
  EXPECT_EQ(restarts[0].value("exit_code", 0), 137) << restarts[0].dump();
  EXPECT_EQ(restarts[0].value("cause", ""), "rank 3 (worker) exited on signal 9 (Killed)") << restarts[0].dump();
  const std::string from = restarts[0].value("resume_from", "");
  EXPECT_NE(r.output.find("polis: resuming from " + from + " ("), std::string::npos) << r.output;

  // Every checkpoint left behind reads, the one resumed from included.
  ShellRun dirs = Shell("ls -d " + run + "/checkpoints/*/manifest.json");
  std::istringstream manifests(dirs.output);
  for (std::string m; std::getline(manifests, m);) {
    auto read = ReadManifest(m.substr(0, m.size() - std::string("/manifest.json").size()));
    EXPECT_TRUE(read.ok()) << read.status().ToString();
  }
  auto resumed = ReadManifest(from);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  ASSERT_EQ(resumed->epoch, 0);
  ASSERT_FALSE(resumed->epoch_complete) << "killed after the epoch ended; the test wants a mid-epoch kill";

  const auto perm = data::EpochPermutation(42, 0, 3000);
  std::map<int64_t, int> seen;
  for (const auto& range : resumed->consumed)
    for (int64_t p = range.begin; p < range.end; ++p) ++seen[perm[p]];
  const std::set<int> first(first_pids.begin(), first_pids.end());
  ShellRun files = Shell("ls " + logs);
  std::istringstream names(files.output);
  int second_attempt_logs = 0;
  for (std::string name; std::getline(names, name);) {
    int rank = -1, pid = -1;
    if (std::sscanf(name.c_str(), "worker-%d-%d.log", &rank, &pid) != 2 || first.count(pid)) continue;
    ++second_attempt_logs;
    std::istringstream lines(ReadOrEmpty(logs + "/" + name));
    int epoch = -1;
    long long index = -1;
    for (std::string line; std::getline(lines, line);)
      if (std::sscanf(line.c_str(), "%d %lld", &epoch, &index) == 2 && epoch == 0) ++seen[index];
  }
  EXPECT_EQ(second_attempt_logs, 2);
  ASSERT_EQ(seen.size(), 3000u);
  for (const auto& [index, count] : seen) ASSERT_EQ(count, 1) << "sample " << index;

  // The published version verifies.
  auto result = ReadJson(run + "/result.json");
  EXPECT_EQ(result.value("state", ""), "done") << result.dump();
  EXPECT_EQ(result.value("version", 0), 1) << result.dump();
  ShellRun verify = Shell(kBin + "/registry/polis-registry verify --root " + registry + " fashion_cnn 1");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
}

// A job that fails on every attempt (it diverges at its first steps, before
// any checkpoint): each attempt starts again from scratch, and after its one
// restart polis-run gives up, naming the rank's own error.
TEST_F(Chaos, RepeatedFailureGivesUpAfterTheBudget) {
  const std::string job =
      JobVariant(dir_, "diverge.pbtxt",
                 {{"optimizer { type: ADAM learning_rate: 0.001 beta1: 0.9 beta2: 0.999 epsilon: 1e-7 }",
                   "optimizer { type: SGD learning_rate: 1000 weight_decay: 1000 }"}});
  const std::string run = dir_ + "/run";
  ShellRun r = Shell(PolisRun("--max-restarts 1 --workers 2 --servers 1 --epochs 1 --registry " + dir_ +
                              "/registry --run-dir " + run + " " + job + " -- --train-limit 1500 --test-limit 300"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("from scratch (no checkpoint yet)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("giving up after 1 restart(s); last failure: rank "), std::string::npos) << r.output;
  auto restarts = Restarts(run);
  ASSERT_EQ(restarts.size(), 2u) << r.output;
  EXPECT_EQ(restarts[0].value("action", ""), "restart") << restarts[0].dump();
  EXPECT_EQ(restarts[1].value("action", ""), "give_up") << restarts[1].dump();
  for (const auto& rec : restarts) {
    EXPECT_EQ(rec.value("cause", "").rfind("rank ", 0), 0u) << rec.dump();
    EXPECT_NE(rec.value("exit_code", 0), 0) << rec.dump();
  }
  auto versions = ListVersions(dir_ + "/registry", "fashion_cnn");
  EXPECT_TRUE(!versions.ok() || versions->empty());
}

}  // namespace
}  // namespace polis
