// A real Prometheus (Debian's `prometheus` package) on loopback scrapes a
// Monitor; its query API must return the series. promtool checks the text
// format. Skipped when the programs are not installed.
#include <gtest/gtest.h>
#include "tests/prereq.h"

#include <fstream>

#include "coordinator/monitor.h"
#include "tests/ops/ops_test_util.h"

namespace polis::coordinator {
namespace {

using ops_test::SampleStatus;
using json = nlohmann::json;

TEST(Prometheus, PromtoolAcceptsTheMetrics) {
  if (!ops_test::HaveProgram("promtool")) POLIS_MISSING_PREREQ() << "promtool not installed (apt-get install prometheus)";
  ops_test::TempDir dir;
  for (const auto& status : {SampleStatus(3, 2), SampleStatus(1, 0, 0, "done"),
                             json{{"job", "x"}, {"state", "running"}}}) {
    const std::string file = dir.path() + "/metrics.txt";
    std::ofstream(file) << PrometheusText(status);
    auto r = ops_test::Shell("promtool check metrics < " + file);
    EXPECT_EQ(r.exit_code, 0) << r.output << r.errors << "\n" << PrometheusText(status);
    EXPECT_EQ(r.output + r.errors, "") << "promtool lint findings";
  }
}

TEST(Prometheus, ScrapesTheMonitor) {
  if (!ops_test::HaveProgram("prometheus")) POLIS_MISSING_PREREQ() << "prometheus not installed (apt-get install prometheus)";
  auto m = Monitor::Start({});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  (*m)->Publish(SampleStatus(3, 1));
  const int monitor_port = ops_test::PortOf((*m)->address());

  ops_test::TempDir dir;
  const std::string config = dir.path() + "/prometheus.yml";
  std::ofstream(config) << fmt::format(
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "scrape_configs:\n  - job_name: polis\n    static_configs:\n"
      "      - targets: ['127.0.0.1:{}']\n",
      monitor_port);
  const int port = ops_test::FreePort();
  const std::string log = dir.path() + "/prometheus.log";
  const pid_t pid = ops_test::Spawn(
      {"prometheus", "--config.file=" + config, "--storage.tsdb.path=" + dir.path() + "/data",
       fmt::format("--web.listen-address=127.0.0.1:{}", port), "--log.level=warn"},
      log);
  ASSERT_GT(pid, 0);

  // Prometheus starts, scrapes every second: poll its query API for up to 60 s.
  json result;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = ops_test::Get(port, "/api/v1/query?query=polis_worker_step");
    if (r.status == 200) {
      json doc = json::parse(r.body, nullptr, false);
      if (doc.is_object() && doc.value("status", "") == "success" &&
          doc["data"]["result"].size() == 3) {
        result = doc["data"]["result"];
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  std::map<std::string, std::string> step_by_rank;
  for (const auto& series : result) {
    EXPECT_EQ(series["metric"]["job"], "polis");  // Prometheus's own target label
    step_by_rank[series["metric"]["rank"].get<std::string>()] = series["value"][1].get<std::string>();
  }
  EXPECT_EQ(step_by_rank, (std::map<std::string, std::string>{{"2", "400"}, {"3", "410"}, {"4", "420"}}))
      << "prometheus log:\n" << ops_test::ReadOrEmpty(log);

  auto up = ops_test::Get(port, "/api/v1/query?query=up");
  EXPECT_NE(up.body.find("\"1\"]"), std::string::npos) << up.body;
  auto loss = ops_test::Get(port, "/api/v1/query?query=polis_job_loss");
  EXPECT_NE(loss.body.find("\"0.4123\""), std::string::npos) << loss.body;
  auto info = ops_test::Get(port, "/api/v1/query?query=polis_job_info");
  EXPECT_NE(info.body.find("\"job_name\":\"fashion_cnn\""), std::string::npos) << info.body;

  const int status = ops_test::StopProcess(pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "prometheus exit status " << status;
}

}  // namespace
}  // namespace polis::coordinator
