// The monitoring API and polisctl against a real running job: values move,
// and a deliberately slowed worker is named as a straggler.
#include <gtest/gtest.h>
#include "tests/prereq.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "common/fs.h"
#include "tests/integration/shell.h"

namespace polis {
namespace {

using namespace polis::it;

TEST(OpsIntegration, StatusMovesAndTheSlowWorkerIsAStraggler) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  char tmpl[] = "/tmp/polis-ops-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string run = dir + "/run";
  ShellRun job;
  // Worker index 1 (rank 3) sleeps 60 ms a step: several times slower.
  std::thread t([&] {
    job = Shell("POLIS_TEST_SLOW_WORKER=1:60 " +
                PolisRun("--workers 2 --servers 1 --epochs 1 --registry " + dir + "/registry --run-dir " + run +
                         " " + kSrc + "/jobs/fashion_cnn.pbtxt -- --train-limit 6000 --test-limit 500"));
  });
  const std::string ctl = kBin + "/launch/polisctl";
  nlohmann::json first, later;
  bool straggler_named = false;
  for (int i = 0; i < 400; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ShellRun s = Shell(ctl + " status --json --run-dir " + run);
    if (s.exit_code != 0) continue;
    auto j = nlohmann::json::parse(s.output, nullptr, false);
    if (j.is_discarded() || !j.contains("workers") || j["workers"].empty()) continue;
    if (first.is_null() && j["workers"][0]["samples"].get<int64_t>() > 0) first = j;
    if (!first.is_null()) later = j;
    for (const auto& r : j["stragglers"]) straggler_named |= r.get<int>() == 3;
    if (straggler_named && !first.is_null() &&
        later["elapsed_seconds"].get<double>() > first["elapsed_seconds"].get<double>() + 1.0)
      break;
  }
  // The Prometheus text is served too.
  auto info = ReadJson(run + "/coordinator.json");
  ShellRun metrics = Shell("curl -s " + info.value("address", std::string()) + "/metrics 2>/dev/null || true");
  t.join();
  ASSERT_EQ(job.exit_code, 0) << job.output;
  ASSERT_FALSE(first.is_null()) << "no status with progress was seen";
  EXPECT_GT(later["elapsed_seconds"].get<double>(), first["elapsed_seconds"].get<double>());
  EXPECT_EQ(later["workers"].size(), 2u);
  EXPECT_EQ(later["servers"].size(), 1u);
  EXPECT_TRUE(straggler_named) << later.dump();
  if (metrics.output.find("polis_") != std::string::npos)
    EXPECT_NE(metrics.output.find("# TYPE"), std::string::npos);
  std::system(("rm -rf " + dir).c_str());
}

// A forecaster's status, polisctl line and metrics give its MAE in the
// target's units where a classifier's give accuracy.
TEST(OpsIntegration, AForecastersStatusGivesItsMae) {
  const std::string csv = kSrc + "/../shared/data/bike-sharing/hour.csv";
  if (!PathExists(csv)) POLIS_MISSING_PREREQ() << "the UCI bike-sharing data is not at " << csv;
  char tmpl[] = "/tmp/polis-ops-ts-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string run = dir + "/run";
  const std::string job = JobVariant(dir, "job.pbtxt", {{"lookback: 168", "lookback: 24"}}, "bike_demand_lstm.pbtxt");
  ShellRun train;
  // The worker sleeps 40 ms a step: about 0.5 s an epoch of 400 windows.
  std::thread t([&] {
    train = Shell("POLIS_TEST_SLOW_WORKER=0:40 " +
                  PolisRun("--workers 1 --servers 0 --sync allreduce --epochs 6 --registry " + dir + "/registry " +
                           "--run-dir " + run + " " + job + " -- --train-limit 400 --test-limit 100 --csv " + csv));
  });
  const std::string ctl = kBin + "/launch/polisctl";
  nlohmann::json seen;
  std::string line, metrics;
  for (int i = 0; i < 600 && seen.is_null(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ShellRun s = Shell(ctl + " status --json --run-dir " + run);
    if (s.exit_code != 0) continue;
    auto j = nlohmann::json::parse(s.output, nullptr, false);
    if (j.is_discarded() || !j.contains("history") || j["history"].empty() || j["state"] != "running") continue;
    seen = j;
    line = Shell(ctl + " status --run-dir " + run).output;
    const std::string address = ReadJson(run + "/coordinator.json").value("address", std::string());
    metrics = Shell("curl -s " + address + "/metrics").output;
  }
  t.join();
  ASSERT_EQ(train.exit_code, 0) << train.output;
  ASSERT_FALSE(seen.is_null()) << "no running status with an epoch done was seen";
  EXPECT_EQ(seen["task"], "regression");
  EXPECT_TRUE(seen["accuracy"].is_null()) << seen.dump();
  const nlohmann::json& last = seen["history"].back();
  ASSERT_TRUE(last.contains("test_mae")) << last.dump();
  EXPECT_FALSE(last.contains("test_accuracy")) << last.dump();
  EXPECT_GT(last["test_mae"].get<double>(), 1.0);  // bikes an hour, not standardised units
  EXPECT_EQ(seen["mae"], last["test_mae"]);
  EXPECT_NE(line.find(fmt::format("mae {:.4g}", seen["mae"].get<double>())), std::string::npos) << line;
  EXPECT_NE(metrics.find("polis_job_mae "), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("polis_job_accuracy "), std::string::npos) << metrics;
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace polis
