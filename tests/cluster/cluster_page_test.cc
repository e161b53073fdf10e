// The cluster page (launch/dashboard/cluster.html) in headless Chromium,
// served by a real `polisctl cluster --serve`: a jobs directory with a
// running job (its coordinator a real Monitor publishing two hosts'
// figures), a finished one and a stale one must give one row per job and
// one per host. Skipped when Chromium is not installed (a failure under
// CI=true). POLIS_TEST_CLUSTER_SCREENSHOT=FILE keeps the screenshot.
#include <gtest/gtest.h>

#include <thread>

#include "common/fs.h"
#include "coordinator/monitor.h"
#include "tests/ops/chromium.h"
#include "tests/ops/ops_test_util.h"
#include "tests/prereq.h"

namespace polis::ctl {
namespace {

using json = nlohmann::json;
using ops_test::Count;
using ops_test::Element;

json Record(const std::string& run_dir, const std::string& state, const std::string& host) {
  return {{"format", "polis-job/1"}, {"job", "fashion_cnn"}, {"run_dir", run_dir},
          {"run_id", std::filesystem::path(run_dir).filename().string()}, {"launcher", "mpirun"},
          {"pid", 999999}, {"launch_host", host}, {"slurm_job_id", ""}, {"hosts", json::array({host})},
          {"workers", 3}, {"servers", 1}, {"started_at", UtcTimestamp()}, {"state", state},
          {"ended_at", state == "finished" ? json(UtcTimestamp()) : json(nullptr)}};
}

TEST(ClusterPage, OneRowPerJobAndPerHostInChromium) {
  if (!ops_test::HaveProgram("chromium")) POLIS_MISSING_PREREQ() << "chromium not installed (apt-get install chromium)";
  ops_test::TempDir dir;
  const std::string jobs = dir.path() + "/jobs";
  ASSERT_TRUE(MakeDirectories(jobs).ok());

  // The running job's coordinator: 5 ranks on two hosts.
  auto monitor = coordinator::Monitor::Start({});
  ASSERT_TRUE(monitor.ok()) << monitor.status().ToString();
  json hosts = json::array();
  hosts.push_back({{"host", "node-a"}, {"ranks", {{{"rank", 0}, {"role", "coordinator"}}, {{"rank", 2}, {"role", "worker"}}, {{"rank", 3}, {"role", "worker"}}}},
                   {"cpu_percent", 87.0}, {"cpus", 16}, {"memory_used_bytes", 6LL << 30}, {"memory_total_bytes", 32LL << 30},
                   {"net_rx_bytes_per_second", 12.5e6}, {"net_tx_bytes_per_second", 11.0e6}, {"sample_age_seconds", 0.4},
                   {"gpus", {{{"index", 0}, {"name", "H100"}, {"utilization_percent", 93.0},
                              {"memory_used_bytes", 40LL << 30}, {"memory_total_bytes", 80LL << 30}}}}});
  hosts.push_back({{"host", "node-b"}, {"ranks", {{{"rank", 1}, {"role", "server"}}, {{"rank", 4}, {"role", "worker"}}}},
                   {"cpu_percent", 35.0}, {"cpus", 16}, {"memory_used_bytes", 3LL << 30}, {"memory_total_bytes", 32LL << 30},
                   {"net_rx_bytes_per_second", 9.0e6}, {"net_tx_bytes_per_second", 9.5e6}, {"sample_age_seconds", 0.9},
                   {"gpus", json::array()}});
  (*monitor)->Publish({{"job", "fashion_cnn"}, {"state", "running"}, {"epoch", 2}, {"epochs", 5},
                       {"eta_seconds", 95.0}, {"elapsed_seconds", 40.0}, {"stragglers", {4}},
                       {"stalled", json::array()}, {"hosts", hosts}});
  const std::string running = dir.path() + "/runs/20261205T100000Z";
  ASSERT_TRUE(MakeDirectories(running).ok());
  ASSERT_TRUE(WriteFileAtomic(running + "/coordinator.json",
                              json{{"address", (*monitor)->address()}, {"host", "node-a"}}.dump()).ok());
  // Launched from another host: its coordinator tells the state.
  ASSERT_TRUE(WriteFileAtomic(jobs + "/a.json", Record(running, "running", "launcher-elsewhere").dump()).ok());
  const std::string done = dir.path() + "/runs/20261205T090000Z";
  ASSERT_TRUE(WriteFileAtomic(jobs + "/b.json", Record(done, "finished", "launcher-elsewhere").dump()).ok());
  // Stale: launched here, its polis-run gone, no end state.
  char here[256] = "";
  gethostname(here, sizeof(here) - 1);
  const std::string stale = dir.path() + "/runs/20261205T080000Z";
  ASSERT_TRUE(WriteFileAtomic(jobs + "/c.json", Record(stale, "running", here).dump()).ok());

  const int port = ops_test::FreePort();
  const pid_t serve = ops_test::Spawn({ops_test::kPolisctl, "cluster", "--jobs-dir", jobs, "--no-squeue", "--serve",
                                       "127.0.0.1:" + std::to_string(port), "--interval", "1"},
                                      dir.path() + "/serve.log");
  ASSERT_GT(serve, 0);
  bool up = false;
  for (int i = 0; i < 200 && !up; ++i) {  // up to ~20 s
    up = ops_test::Get(port, "/api/cluster").status == 200;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << ops_test::ReadOrEmpty(dir.path() + "/serve.log");
  const json api = json::parse(ops_test::Get(port, "/api/cluster").body, nullptr, false);
  ASSERT_TRUE(api.is_object());
  EXPECT_EQ(api["jobs"].size(), 3u) << api.dump(2);
  const std::string metrics = ops_test::Get(port, "/metrics").body;
  EXPECT_NE(metrics.find("polis_host_cpu_percent{host=\"node-a\"} 87"), std::string::npos) << metrics;

  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/";
  auto dom = ops_test::Shell(ops_test::Chromium(dir.path() + "/profile", "--dump-dom", url));
  ASSERT_EQ(dom.exit_code, 0) << dom.errors;
  const std::string& html = dom.output;
  const std::string job_table = Element(html, "jobs", "</table>");
  EXPECT_EQ(Count(job_table, "<tr data-job="), 3) << job_table;
  EXPECT_NE(job_table.find(R"(<tr data-job="20261205T100000Z" class="running">)"), std::string::npos) << job_table;
  EXPECT_NE(job_table.find(R"(<tr data-job="20261205T090000Z" class="finished">)"), std::string::npos) << job_table;
  EXPECT_NE(job_table.find(R"(<tr data-job="20261205T080000Z" class="lost">)"), std::string::npos) << job_table;
  EXPECT_NE(job_table.find("node-a, node-b"), std::string::npos) << job_table;
  EXPECT_NE(job_table.find("stragglers: 4"), std::string::npos) << job_table;
  EXPECT_NE(job_table.find("is gone and recorded no end state"), std::string::npos) << job_table;
  EXPECT_NE(job_table.find("href=\"" + (*monitor)->address() + "\""), std::string::npos) << job_table;
  const std::string host_table = Element(html, "hosts", "</table>");
  EXPECT_EQ(Count(host_table, "<tr data-host="), 2) << host_table;
  EXPECT_NE(host_table.find(R"(<tr data-host="node-a">)"), std::string::npos) << host_table;
  EXPECT_NE(host_table.find("0 coordinator, 2 worker, 3 worker"), std::string::npos) << host_table;
  EXPECT_NE(host_table.find("87%"), std::string::npos) << host_table;
  EXPECT_NE(host_table.find("6.0 GiB / 32.0 GiB"), std::string::npos) << host_table;
  EXPECT_NE(host_table.find("11.9 MiB/s"), std::string::npos) << host_table;
  EXPECT_NE(host_table.find("0: 93% 40.0 GiB / 80.0 GiB"), std::string::npos) << host_table;

  ops_test::CheckScreenshot(dir.path() + "/profile", url, "1280,700", "POLIS_TEST_CLUSTER_SCREENSHOT",
                            dir.path() + "/cluster.png");
  ops_test::StopProcess(serve);
}

}  // namespace
}  // namespace polis::ctl
