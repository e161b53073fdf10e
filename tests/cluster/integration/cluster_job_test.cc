// `polisctl cluster` against a real job (docs/operations.md, "The cluster
// view"): launch/polis-run registers the run in a fresh jobs directory and
// trains a parameter-server job whose second worker is slowed
// (POLIS_TEST_SLOW_WORKER); while it trains, `polisctl cluster --json` must
// list it running on this host with its four ranks, name the slowed rank a
// straggler, and show this host's figures from the ranks' reports as
// plausible numbers; once it ends, the record says finished.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <thread>

#include "tests/ops/ops_test_util.h"
#include "tests/prereq.h"

namespace polis::ctl {
namespace {

using namespace ops_test;

bool HaveFashionMnist() { return PathExists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

json Cluster(const std::string& jobs_dir, std::string* text = nullptr) {
  auto r = Shell(kPolisctl + " cluster --json --no-squeue --jobs-dir " + jobs_dir);
  if (text) *text = r.output + r.errors;
  if (r.exit_code != 0) return nullptr;
  return json::parse(r.output, nullptr, false);
}

TEST(ClusterJob, SlowedWorkerJobIsListedRunningOnItsHostWithFigures) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  TempDir dir;
  const std::string jobs = dir.path() + "/jobs", run = dir.path() + "/run";
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  ShellRun job;
  std::atomic<bool> ended{false};
  // Worker index 1 (rank 3: coordinator 0, server 1, workers 2 and 3)
  // sleeps 300 ms a step.
  std::thread t([&] {
    job = Shell("POLIS_JOBS_DIR=" + jobs + " POLIS_TEST_SLOW_WORKER=1:300 POLIS_NO_BUILD=1 POLIS_BUILD_DIR=" + kBin +
                " " + kSrc + "/launch/polis-run --workers 2 --servers 1 --epochs 1 --registry " + dir.path() +
                "/registry --run-dir " + run + " " + kSrc +
                "/jobs/fashion_cnn.pbtxt -- --train-limit 4000 --test-limit 200");
    ended = true;
  });
  json seen;                    // the first listing with the job running and figures
  bool straggler_named = false; // rank 3 among the job's stragglers at some point
  std::string last;
  for (int i = 0; i < 1200 && !ended && !(seen.is_object() && straggler_named); ++i) {  // up to ~2 min
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const json c = Cluster(jobs, &last);
    if (!c.is_object() || c["jobs"].size() != 1) continue;
    const json& j = c["jobs"][0];
    if (j["state"] != "running") continue;
    if (j["stragglers"] == json::array({3})) straggler_named = true;
    if (!seen.is_object() && j["progress_percent"].is_number() && c["hosts"].size() == 1 &&
        c["hosts"][0]["cpu_percent"].is_number() &&
        c["hosts"][0]["net_rx_bytes_per_second"].is_number() && c["hosts"][0]["ranks"].size() == 4)
      seen = c;
  }
  t.join();
  ASSERT_EQ(job.exit_code, 0) << job.output << job.errors;
  ASSERT_TRUE(seen.is_object()) << "never listed running with its host's figures; last listing:\n" << last;
  const json& j = seen["jobs"][0];
  EXPECT_EQ(j["job"], "fashion_cnn");
  EXPECT_EQ(j["run_dir"], std::filesystem::canonical(run).string());
  EXPECT_EQ(j["hosts"], json::array({host}));
  EXPECT_EQ(j["ranks"].size(), 4u);
  EXPECT_EQ(j["epochs"], 1);
  EXPECT_TRUE(j["progress_percent"].is_number());
  EXPECT_TRUE(straggler_named) << "rank 3 was never named a straggler";

  const json& h = seen["hosts"][0];
  EXPECT_EQ(h["host"], host);
  std::set<std::pair<int, std::string>> ranks;
  for (const auto& r : h["ranks"]) {
    ranks.insert({r["rank"].get<int>(), r["role"].get<std::string>()});
    EXPECT_EQ(r["run_id"], "run");
  }
  EXPECT_EQ(ranks, (std::set<std::pair<int, std::string>>{{0, "coordinator"}, {1, "server"}, {2, "worker"}, {3, "worker"}}));
  EXPECT_GE(h["cpu_percent"].get<double>(), 0);
  EXPECT_LE(h["cpu_percent"].get<double>(), 100);
  EXPECT_GE(h["cpus"].get<int>(), 1);
  EXPECT_GT(h["memory_used_bytes"].get<double>(), 0);
  EXPECT_LT(h["memory_used_bytes"].get<double>(), h["memory_total_bytes"].get<double>());
  EXPECT_GE(h["net_rx_bytes_per_second"].get<double>(), 0);
  EXPECT_GE(h["net_tx_bytes_per_second"].get<double>(), 0);
  EXPECT_TRUE(h["gpus"].empty()) << "a CPU build reports no GPU";

  // The run has ended: its record says so, and the text tables show it.
  const json after = Cluster(jobs, &last);
  ASSERT_TRUE(after.is_object()) << last;
  ASSERT_EQ(after["jobs"].size(), 1u) << last;
  EXPECT_EQ(after["jobs"][0]["state"], "finished") << after.dump(2);
  EXPECT_EQ(after["jobs"][0]["progress_percent"], 100.0);
  auto table = Shell(kPolisctl + " cluster --no-squeue --jobs-dir " + jobs);
  EXPECT_EQ(table.exit_code, 0) << table.errors;
  EXPECT_NE(table.output.find("fashion_cnn  run  finished"), std::string::npos) << table.output;
}

}  // namespace
}  // namespace polis::ctl
