// Parameter servers in depth, with real processes: consistency models under
// a slow worker, checkpoints, stop-on-signal, resume on a different cluster
// size with exactly-once samples, and dead ranks.
#include <gtest/gtest.h>
#include "tests/prereq.h"
#include <signal.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "common/checkpoint.h"
#include "common/data/shard_plan.h"
#include "tests/integration/shell.h"

namespace polis {
namespace {

using namespace polis::it;

class PsIntegration : public FashionJobTest {
 protected:
  // Runs a job to completion and returns its result.json.
  nlohmann::json Train(const std::string& job, const std::string& name, const std::string& args,
                       const std::string& env = "") {
    ShellRun r = Shell(env + " " + PolisRun("--registry " + dir_ + "/registry --run-dir " + dir_ + "/" +
                                              name + " " + job + " " + args));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return ReadJson(dir_ + "/" + name + "/result.json");
  }
};

// Small shards (4 batches), so how the epoch splits between workers shows
// their speed rather than shard granularity.
std::string Consistency(const std::string& dir, const std::string& mode) {
  return JobVariant(dir, "job-" + mode + ".pbtxt",
                    {{"consistency: BSP", "consistency: " + mode + (mode == "SSP" ? " staleness: 2" : "")},
                     {"training { batch_size: 32 epochs: 5 seed: 42 }",
                      "training { batch_size: 32 epochs: 5 seed: 42 shard_size: 128 }"}});
}

TEST_F(PsIntegration, SspNeverExceedsItsBoundUnderASlowWorker) {
  // Worker 1 sleeps 20 ms per step: about 3x slower than worker 0 here.
  auto result = Train(Consistency(dir_, "SSP"), "ssp", "--workers 2 --servers 1 --epochs 1 -- --train-limit 3000 --test-limit 500",
                      "POLIS_TEST_SLOW_WORKER=1:20");
  ASSERT_TRUE(result.contains("max_staleness_observed")) << result.dump();
  EXPECT_LE(result["max_staleness_observed"].get<int>(), 2);
  // The bound was exercised: replies were held for the slow worker.
  EXPECT_GT(result["server_stats"][0]["held_replies"].get<int>(), 0) << result.dump();
  EXPECT_EQ(result["history"][0]["train_samples"], 3000);
}

TEST_F(PsIntegration, AspLetsTheFastWorkerRunAheadBspDoesNot) {
  const std::string slow = "POLIS_TEST_SLOW_WORKER=1:60";
  auto asp = Train(Consistency(dir_, "ASP"), "asp", "--workers 2 --servers 1 --epochs 1 -- --train-limit 3000 --test-limit 500", slow);
  auto bsp = Train(Consistency(dir_, "BSP"), "bsp", "--workers 2 --servers 1 --epochs 1 -- --train-limit 3000 --test-limit 500", slow);
  auto a = asp["history"][0]["worker_train_samples"], b = bsp["history"][0]["worker_train_samples"];
  // Under ASP the fast worker is never held back, so it trains on most of
  // the epoch; under BSP both move in lock-step and split it about evenly.
  EXPECT_GT(a[0].get<int>(), 2 * a[1].get<int>()) << a;
  EXPECT_LT(b[0].get<int>(), 2 * b[1].get<int>()) << b;
  EXPECT_GT(asp["max_staleness_observed"].get<int>(), 2);
  std::printf("with a slow worker: ASP %.2f s, BSP %.2f s (not asserted)\n",
              asp["train_seconds"].get<double>(), bsp["train_seconds"].get<double>());
}

// Pushing in pieces during backward and pulling them during the next
// forward changes when bytes move, never which: a BSP run with one piece per
// layer (on 2 servers the third convolution straddles them) and one with the
// default grouping end with exactly the losses of a run that sends one
// message per server and waits for the whole reply. Two workers keep the
// run deterministic (a + b == b + a, whichever worker got which shard).
TEST_F(PsIntegration, PiecesAndOverlapTrainTheSameModelAsOneMessagePerServer) {
  const std::string args = "--workers 2 --servers 2 --epochs 1 -- --train-limit 1000 --test-limit 300";
  auto run = [&](const std::string& name, const std::string& piece_bytes) {
    const std::string job = JobVariant(dir_, name + ".pbtxt", {{"consistency: BSP", "consistency: BSP ps_piece_bytes: " + piece_bytes}});
    return Train(job, name, args);
  };
  auto whole = run("whole", "-1"), per_layer = run("per_layer", "0"), grouped = run("grouped", "65536");
  ASSERT_EQ(whole["history"].size(), 1u) << whole.dump();
  for (const auto* r : {&per_layer, &grouped}) {
    ASSERT_EQ((*r)["history"].size(), 1u) << r->dump();
    for (const char* key : {"train_loss", "test_loss", "test_accuracy"})
      EXPECT_EQ((*r)["history"][0][key], whole["history"][0][key]) << key << "\n" << r->dump() << "\n" << whole.dump();
  }
}

// SIGTERM to the coordinator checkpoints and stops; resuming with more
// workers (and servers) finishes the job, and every sample of the
// interrupted epoch is trained on exactly once. In all-reduce mode the
// checkpoint is taken by every replica after the same step, and no worker is
// left waiting inside a collective.
struct StopResume {
  std::string base_job;
  std::string first_cluster, second_cluster;  // polis-run options
  int first_ranks = 0;
  int second_workers = 0, second_servers = 0;
};

void StopThenResumeElsewhereExactlyOnce(const std::string& dir, const StopResume& c) {
  const std::string job = JobVariant(dir, "job.pbtxt", {{"training { batch_size: 32 epochs: 5 seed: 42 }",
                                                         "training { batch_size: 32 epochs: 2 seed: 42 checkpoint_every_steps: 10 }"}},
                                     c.base_job);
  const std::string run = dir + "/run";
  const std::string cmd = PolisRun(c.first_cluster + " --registry " + dir + "/registry --run-dir " + run +
                                   " " + job + " -- --train-limit 3000 --test-limit 500");
  ShellRun first;
  std::thread t([&] { first = Shell("POLIS_TEST_SLOW_WORKER=0:10 " + cmd); });
  // Wait for the first mid-epoch checkpoint, then stop the job.
  int coordinator = -1;
  for (int i = 0; i < 600 && coordinator < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!PathExists(run + "/checkpoints")) continue;
    std::vector<std::string> skipped;
    if (FindLatestCheckpoint(run, &skipped).ok()) coordinator = RankPids(run, c.first_ranks)[0];
  }
  ASSERT_GT(coordinator, 0) << "no checkpoint appeared";
  kill(coordinator, SIGTERM);
  t.join();
  EXPECT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("resume with"), std::string::npos) << first.output;
  auto stopped = ReadJson(run + "/result.json");
  EXPECT_EQ(stopped["state"], "stopped") << stopped.dump();

  std::vector<std::string> skipped;
  auto m = FindLatestCheckpoint(run, &skipped);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_FALSE(m->epoch_complete) << "stopped between epochs; the test wants a mid-epoch stop";
  // Samples of the interrupted epoch already in the checkpoint.
  const auto perm = data::EpochPermutation(42, m->epoch, 3000);
  std::map<int64_t, int> seen;
  for (const auto& r : m->consumed)
    for (int64_t p = r.begin; p < r.end; ++p) ++seen[perm[p]];

  const std::string logs = dir + "/samples";
  Shell("mkdir -p " + logs);
  ShellRun second = Shell("POLIS_TEST_SAMPLE_LOG=" + logs + " " +
                          PolisRun(c.second_cluster + " --resume " + run + " -- --train-limit 3000 --test-limit 500"));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resuming from"), std::string::npos) << second.output;
  ShellRun cat = Shell("cat " + logs + "/*.log");
  size_t at = 0;
  while (at < cat.output.size()) {
    size_t nl = cat.output.find('\n', at);
    int epoch = -1;
    long long index = -1;
    if (std::sscanf(cat.output.c_str() + at, "%d %lld", &epoch, &index) == 2 && epoch == m->epoch) ++seen[index];
    at = nl == std::string::npos ? cat.output.size() : nl + 1;
  }
  ASSERT_EQ(seen.size(), 3000u);
  for (const auto& [index, count] : seen) ASSERT_EQ(count, 1) << "sample " << index;

  auto result = ReadJson(run + "/result.json");
  EXPECT_EQ(result["workers"], c.second_workers);
  EXPECT_EQ(result["servers"], c.second_servers);
  EXPECT_EQ(result["epochs"], 2);
  EXPECT_GT(result["test_accuracy"].get<double>(), 0.65) << result.dump();
  EXPECT_EQ(result["history"].size(), 2u);
}

TEST_F(PsIntegration, StopOnSignalThenResumeElsewhereExactlyOnce) {
  StopThenResumeElsewhereExactlyOnce(
      dir_, {"fashion_cnn.pbtxt", "--workers 2 --servers 1", "--workers 3 --servers 2", 4, 3, 2});
}

TEST_F(PsIntegration, AllReduceStopOnSignalThenResumeElsewhereExactlyOnce) {
  StopThenResumeElsewhereExactlyOnce(
      dir_, {"fashion_cnn_allreduce.pbtxt", "--workers 2", "--workers 3", 3, 3, 0});
}

// Stopped at a mid-epoch checkpoint and resumed on the same cluster, a job
// ends exactly where the uninterrupted run ends: the checkpoint keeps each
// worker's granted-but-untrained positions and hands them back to the same
// worker first, so every later batch holds the samples it held before, and
// parameters, optimizer state and schedule come back bit for bit. (Two
// workers: a + b == b + a, whichever worker asked first for a shard.)
void StopThenResumeReproduces(const std::string& dir, const std::string& base_job,
                              const std::string& cluster, int ranks) {
  const std::string job = JobVariant(dir, "job.pbtxt", {{"training { batch_size: 32 epochs: 5 seed: 42 }",
                                                         "training { batch_size: 32 epochs: 2 seed: 42 checkpoint_every_steps: 10 }"}},
                                     base_job);
  const std::string data = " -- --train-limit 3000 --test-limit 500";
  const std::string env = "POLIS_TEST_SLOW_WORKER=0:10 ";
  ShellRun clean = Shell(env + PolisRun(cluster + " --registry " + dir + "/registry --run-dir " + dir + "/clean " +
                                        job + data));
  ASSERT_EQ(clean.exit_code, 0) << clean.output;
  const std::string run = dir + "/run";
  ShellRun first;
  std::thread th([&] {
    first = Shell(env + PolisRun(cluster + " --registry " + dir + "/registry --run-dir " + run + " " + job + data));
  });
  int coordinator = -1;
  for (int i = 0; i < 600 && coordinator < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::vector<std::string> skipped;
    if (PathExists(run + "/checkpoints") && FindLatestCheckpoint(run, &skipped).ok())
      coordinator = RankPids(run, ranks)[0];
  }
  ASSERT_GT(coordinator, 0) << "no checkpoint appeared";
  kill(coordinator, SIGTERM);
  th.join();
  ASSERT_EQ(first.exit_code, 0) << first.output;
  std::vector<std::string> skipped;
  auto m = FindLatestCheckpoint(run, &skipped);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_FALSE(m->epoch_complete) << "stopped between epochs; the test wants a mid-epoch stop";
  ASSERT_EQ(m->pending.size(), 2u);
  ShellRun second = Shell(env + PolisRun(cluster + " --resume " + run + data));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  auto a = ReadJson(dir + "/clean/result.json"), b = ReadJson(run + "/result.json");
  ASSERT_EQ(a["history"].size(), 2u) << a.dump();
  ASSERT_EQ(b["history"].size(), 2u) << b.dump();
  for (int e = 0; e < 2; ++e)
    for (const char* key : {"test_loss", "test_accuracy"})
      EXPECT_EQ(b["history"][e][key], a["history"][e][key]) << "epoch " << e + 1 << " " << key;
}

TEST_F(PsIntegration, StopAndResumeOnTheSameClusterReproducesTheUninterruptedRun) {
  StopThenResumeReproduces(dir_, "fashion_cnn.pbtxt", "--workers 2 --servers 1", 4);
}

TEST_F(PsIntegration, AllReduceStopAndResumeOnTheSameClusterReproducesTheUninterruptedRun) {
  StopThenResumeReproduces(dir_, "fashion_cnn_allreduce.pbtxt", "--workers 2", 3);
}

// A rank killed with SIGKILL stops the whole job promptly with a message
// naming it, and the run stays resumable from its last checkpoint.
void KillRankTest(const std::string& dir, int victim, const char* role) {
  const std::string job = JobVariant(dir, "job.pbtxt", {{"training { batch_size: 32 epochs: 5 seed: 42 }",
                                                         "training { batch_size: 32 epochs: 2 seed: 42 checkpoint_every_steps: 10 }"}});
  const std::string run = dir + "/run";
  ShellRun r;
  std::thread t([&] {
    r = Shell("POLIS_TEST_SLOW_WORKER=0:10 " + PolisRun("--workers 2 --servers 1 --registry " + dir +
                                                        "/registry --run-dir " + run + " " + job +
                                                        " -- --train-limit 3000 --test-limit 500"));
  });
  int pid = -1;
  for (int i = 0; i < 600 && pid < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::vector<std::string> skipped;
    if (PathExists(run + "/checkpoints") && FindLatestCheckpoint(run, &skipped).ok()) pid = RankPids(run, 4)[victim];
  }
  ASSERT_GT(pid, 0);
  auto killed_at = std::chrono::steady_clock::now();
  kill(pid, SIGKILL);
  t.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("rank " + std::to_string(victim)), std::string::npos) << r.output;
  std::printf("%s killed: job ended %.1f s later\n", role, seconds);
  std::vector<std::string> skipped;
  EXPECT_TRUE(FindLatestCheckpoint(run, &skipped).ok());
  ShellRun again = Shell(PolisRun("--workers 2 --servers 1 --resume " + run + " -- --train-limit 3000 --test-limit 500"));
  EXPECT_EQ(again.exit_code, 0) << again.output;
}

TEST_F(PsIntegration, KilledWorkerIsNamedAndTheRunResumes) { KillRankTest(dir_, 2, "worker"); }
TEST_F(PsIntegration, KilledServerIsNamedAndTheRunResumes) { KillRankTest(dir_, 1, "server"); }

}  // namespace
}  // namespace polis
