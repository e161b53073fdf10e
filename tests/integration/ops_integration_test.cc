// The monitoring API and polisctl against a real running job: values move,
// and a deliberately slowed worker is named as a straggler.
#include <gtest/gtest.h>
#include "tests/prereq.h"

#include <chrono>
#include <thread>

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

}  // namespace
}  // namespace polis
