// The coordinator's monitoring API (coordinator/monitor.h) against a real
// socket on 127.0.0.1: status, Prometheus text, token checks, commands and
// the dashboard's static files.
#include "coordinator/monitor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/ops/ops_test_util.h"
#include "tests/ops/prometheus_parse.h"

namespace polis::coordinator {
namespace {

using ops_test::Get;
using ops_test::Http;
using ops_test::PortOf;
using ops_test::ParseExposition;
using ops_test::ParsedMetrics;
using ops_test::SampleStatus;
using json = nlohmann::json;

std::unique_ptr<Monitor> StartMonitor(Monitor::Options options = {}) {
  if (options.dashboard_dir.empty()) options.dashboard_dir = ops_test::kSrc + "/launch/dashboard";
  auto m = Monitor::Start(options);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? std::move(*m) : nullptr;
}

Monitor::Options Listen(const std::string& listen) {
  Monitor::Options o;
  o.listen = listen;
  return o;
}

TEST(Monitor, AddressIsLoopbackWithTheBoundPort) {
  auto m = StartMonitor();
  ASSERT_TRUE(m);
  EXPECT_TRUE(std::regex_match(m->address(), std::regex(R"(http://127\.0\.0\.1:[1-9][0-9]*)")))
      << m->address();
  EXPECT_EQ(Get(PortOf(m->address()), "/healthz").status, 200);
}

TEST(Monitor, StatusIs503UntilPublishedThenTheLatestDocument) {
  auto m = StartMonitor();
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());
  auto before = Get(port, "/api/status");
  EXPECT_EQ(before.status, 503) << before.error;
  EXPECT_NE(before.body.find("not published"), std::string::npos) << before.body;

  json s = SampleStatus();
  m->Publish(s);
  auto r = Get(port, "/api/status");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.Header("Content-Type"), "application/json");
  EXPECT_EQ(r.Header("Cache-Control"), "no-store");
  EXPECT_EQ(json::parse(r.body), s);

  s["step"] = 1300;
  s["state"] = "checkpointing";
  m->Publish(s);
  auto again = Get(port, "/api/status?x=1");  // a query string is ignored
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(json::parse(again.body)["step"], 1300);
  EXPECT_EQ(json::parse(again.body)["state"], "checkpointing");
}

TEST(Monitor, HeadAndWrongMethods) {
  auto m = StartMonitor();
  ASSERT_TRUE(m);
  m->Publish(SampleStatus());
  const int port = PortOf(m->address());
  auto head = Http(port, "HEAD", "/api/status");
  EXPECT_EQ(head.status, 200) << head.error;
  EXPECT_TRUE(head.body.empty());
  EXPECT_GT(std::stoi(head.Header("Content-Length")), 100);
  auto post = Http(port, "POST", "/api/status");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.Header("Allow"), "GET, HEAD");
  auto get_stop = Get(port, "/api/stop");
  EXPECT_EQ(get_stop.status, 405);
  EXPECT_EQ(get_stop.Header("Allow"), "POST");
  EXPECT_EQ(Get(port, "/api/nothing").status, 404);
}

TEST(Monitor, MetricsAreWellFormedPrometheusText) {
  auto m = StartMonitor();
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());
  auto empty = Get(port, "/metrics");
  EXPECT_EQ(empty.status, 200);
  EXPECT_TRUE(empty.body.empty()) << empty.body;

  m->Publish(SampleStatus(/*workers=*/3, /*servers=*/2));
  auto r = Get(port, "/metrics");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.Header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  ParsedMetrics p = ParseExposition(r.body);
  for (const auto& problem : p.problems) ADD_FAILURE() << problem;

  EXPECT_EQ(p.type["polis_job_epoch"], "gauge");
  EXPECT_EQ(p.samples["polis_job_epoch"], 2);
  EXPECT_DOUBLE_EQ(p.samples["polis_job_loss"], 0.4123);
  EXPECT_DOUBLE_EQ(p.samples["polis_job_samples_per_second"], 2345.5);
  EXPECT_EQ(p.samples["polis_job_eta_seconds"], 185);
  EXPECT_EQ(p.samples["polis_job_info{job_name=\"fashion_cnn\",state=\"running\"}"], 1);
  // Workers are ranks 3, 4, 5 (after two servers); 3 straggles, 5 is stalled.
  EXPECT_EQ(p.samples["polis_worker_step{rank=\"3\"}"], 400);
  EXPECT_EQ(p.samples["polis_worker_step{rank=\"5\"}"], 420);
  EXPECT_EQ(p.type["polis_worker_compute_seconds_total"], "counter");
  EXPECT_DOUBLE_EQ(p.samples["polis_worker_compute_seconds_total{rank=\"4\"}"], 42.5);
  EXPECT_DOUBLE_EQ(p.samples["polis_worker_comm_seconds_total{rank=\"4\"}"], 3.25);
  EXPECT_EQ(p.samples["polis_worker_straggler{rank=\"3\"}"], 1);
  EXPECT_EQ(p.samples["polis_worker_straggler{rank=\"4\"}"], 0);
  EXPECT_EQ(p.samples["polis_worker_stalled{rank=\"5\"}"], 1);
  EXPECT_EQ(p.samples["polis_worker_stalled{rank=\"3\"}"], 0);
  EXPECT_DOUBLE_EQ(p.samples["polis_server_updates_per_second{rank=\"2\"}"], 34.5);
  EXPECT_EQ(p.samples["polis_server_keys{rank=\"2\"}"], 50000);
  EXPECT_EQ(p.samples["polis_job_stragglers"], 1);
  EXPECT_EQ(p.samples["polis_job_workers"], 3);
}

TEST(Monitor, AForecastersMetricsGiveItsMaeNotAnAccuracy) {
  const std::string text = PrometheusText(ops_test::SampleForecasterStatus());
  ParsedMetrics p = ParseExposition(text);
  for (const auto& problem : p.problems) ADD_FAILURE() << problem;
  EXPECT_EQ(p.type["polis_job_mae"], "gauge");
  EXPECT_DOUBLE_EQ(p.samples["polis_job_mae"], 55.85);
  EXPECT_EQ(text.find("polis_job_accuracy"), std::string::npos) << text;
  EXPECT_EQ(PrometheusText(SampleStatus()).find("polis_job_mae"), std::string::npos);
}

TEST(Monitor, MetricsLeaveOutMissingFieldsAndEscapeLabels) {
  json s = {{"job", "a \"quoted\"\\job\nname"}, {"state", "running"}, {"epoch", 1},
            {"loss", nullptr}, {"workers", json::array({{{"rank", 2}, {"step", 5}}})}};
  const std::string text = PrometheusText(s);
  ParsedMetrics p = ParseExposition(text);
  for (const auto& problem : p.problems) ADD_FAILURE() << problem;
  EXPECT_EQ(text.find("polis_job_loss"), std::string::npos) << text;
  EXPECT_EQ(text.find("polis_worker_compute_seconds_total"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(job_name="a \"quoted\"\\job\nname")"), std::string::npos) << text;
  EXPECT_EQ(p.samples["polis_worker_step{rank=\"2\"}"], 5);
  EXPECT_EQ(PrometheusText(json::array()), "");
}

// What launch/prometheus/polis-alerts.yml needs beyond the basics: the
// host of every rank, the run, the checkpoint schedule, servers' heartbeats.
TEST(Monitor, MetricsNameHostsRunAndCheckpointSchedule) {
  json s = SampleStatus(/*workers=*/2, /*servers=*/1);
  s["run_dir"] = "/data/runs/fashion_cnn/20261205-112000/";
  s["host"] = "node1";
  for (auto& w : s["workers"]) w["host"] = w["rank"].get<int>() == 2 ? "node1" : "node\"2";
  s["servers"][0]["host"] = "node1";
  s["servers"][0]["last_heartbeat_age_seconds"] = 1.5;
  s["stalled"] = json::array({1});
  s["checkpoint"] = {{"every_steps", 500}, {"steps_since", 120}, {"at_epoch_end", true},
                     {"epochs_since", 0}, {"completed_at", 1764933600.5}};
  const std::string text = PrometheusText(s);
  ParsedMetrics p = ParseExposition(text);
  for (const auto& problem : p.problems) ADD_FAILURE() << problem;
  EXPECT_EQ(p.samples["polis_job_info{job_name=\"fashion_cnn\",run_id=\"20261205-112000\",host=\"node1\","
                      "state=\"running\"}"], 1) << text;
  EXPECT_EQ(p.samples["polis_worker_step{rank=\"2\",host=\"node1\"}"], 400) << text;
  EXPECT_EQ(p.samples["polis_worker_straggler{rank=\"3\",host=\"node\\\"2\"}"], 0) << text;
  EXPECT_EQ(p.samples["polis_server_stalled{rank=\"1\",host=\"node1\"}"], 1) << text;
  EXPECT_EQ(p.samples["polis_worker_stalled{rank=\"2\",host=\"node1\"}"], 0) << text;
  EXPECT_EQ(p.type["polis_server_last_heartbeat_age_seconds"], "gauge");
  EXPECT_DOUBLE_EQ(p.samples["polis_server_last_heartbeat_age_seconds{rank=\"1\",host=\"node1\"}"], 1.5);
  EXPECT_EQ(p.samples["polis_job_checkpoint_every_steps"], 500);
  EXPECT_EQ(p.samples["polis_job_steps_since_checkpoint"], 120);
  EXPECT_EQ(p.samples["polis_job_checkpoint_at_epoch_end"], 1);
  EXPECT_EQ(p.samples["polis_job_epochs_since_checkpoint"], 0);
  EXPECT_DOUBLE_EQ(p.samples["polis_job_last_checkpoint_timestamp_seconds"], 1764933600.5);
  // Before the first checkpoint there is no time to show.
  s["checkpoint"]["completed_at"] = nullptr;
  EXPECT_EQ(PrometheusText(s).find("polis_job_last_checkpoint_timestamp_seconds"), std::string::npos);
}

// DP-SGD jobs: the accountant's figures; none for other jobs.
TEST(Monitor, MetricsShowThePrivacySpent) {
  json s = SampleStatus(/*workers=*/2, /*servers=*/0);
  EXPECT_EQ(PrometheusText(s).find("polis_job_privacy"), std::string::npos);
  s["privacy"] = {{"epsilon", 1.25}, {"epsilon_planned", 3.0}, {"delta", 1e-5}, {"noise_multiplier", 0.9},
                  {"steps", 120}, {"sampler", "poisson"}};
  const std::string text = PrometheusText(s);
  ParsedMetrics p = ParseExposition(text);
  for (const auto& problem : p.problems) ADD_FAILURE() << problem;
  EXPECT_DOUBLE_EQ(p.samples["polis_job_privacy_epsilon"], 1.25) << text;
  EXPECT_DOUBLE_EQ(p.samples["polis_job_privacy_epsilon_planned"], 3.0);
  EXPECT_DOUBLE_EQ(p.samples["polis_job_privacy_delta"], 1e-5);
  EXPECT_DOUBLE_EQ(p.samples["polis_job_privacy_noise_multiplier"], 0.9);
  EXPECT_EQ(p.samples["polis_job_privacy_steps"], 120);
}

TEST(Monitor, CommandsNeedTheBearerToken) {
  Monitor::Options o;
  o.token = "s3cret-token";
  auto m = StartMonitor(o);
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());

  auto none = Http(port, "POST", "/api/checkpoint");
  EXPECT_EQ(none.status, 401) << none.error;
  EXPECT_EQ(none.Header("WWW-Authenticate"), "Bearer realm=\"polis\"");
  EXPECT_EQ(Http(port, "POST", "/api/stop", {{"Authorization", "Basic czNjcmV0"}}).status, 401);
  EXPECT_EQ(Http(port, "POST", "/api/stop", {{"Authorization", "Bearer wrong"}}).status, 403);
  EXPECT_EQ(Http(port, "POST", "/api/stop", {{"Authorization", "Bearer s3cret-token-and-more"}}).status, 403);
  EXPECT_EQ(Http(port, "POST", "/api/stop", {{"Authorization", "Bearer s3cret-toke"}}).status, 403);
  EXPECT_TRUE(m->TakeCommands().empty());

  auto ok = Http(port, "POST", "/api/checkpoint", {{"Authorization", "Bearer s3cret-token"}});
  EXPECT_EQ(ok.status, 202);
  EXPECT_EQ(json::parse(ok.body)["accepted"], "checkpoint");
  EXPECT_EQ(Http(port, "POST", "/api/stop", {{"Authorization", "bearer s3cret-token"}}).status, 202);
  auto commands = m->TakeCommands();
  ASSERT_EQ(commands.size(), 2u);
  EXPECT_EQ(commands[0], Monitor::Command::kCheckpoint);
  EXPECT_EQ(commands[1], Monitor::Command::kStop);
  EXPECT_TRUE(m->TakeCommands().empty());
}

TEST(Monitor, CommandsAreRefusedWithoutAConfiguredToken) {
  auto m = StartMonitor();
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());
  EXPECT_EQ(Http(port, "POST", "/api/stop").status, 403);
  EXPECT_EQ(Http(port, "POST", "/api/stop", {{"Authorization", "Bearer "}}).status, 403);
  EXPECT_EQ(Http(port, "POST", "/api/checkpoint", {{"Authorization", "Bearer x"}}).status, 403);
  EXPECT_TRUE(m->TakeCommands().empty());
}

TEST(Monitor, CommandQueueIsBounded) {
  Monitor::Options o;
  o.token = "t";
  auto m = StartMonitor(o);
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());
  for (size_t i = 0; i < Monitor::kMaxQueuedCommands; ++i)
    ASSERT_EQ(Http(port, "POST", "/api/checkpoint", {{"Authorization", "Bearer t"}}).status, 202);
  EXPECT_EQ(Http(port, "POST", "/api/checkpoint", {{"Authorization", "Bearer t"}}).status, 503);
  EXPECT_EQ(m->TakeCommands().size(), Monitor::kMaxQueuedCommands);
  EXPECT_EQ(Http(port, "POST", "/api/stop", {{"Authorization", "Bearer t"}}).status, 202);
}

TEST(Monitor, OversizedBodiesAndGarbageAreRefused) {
  Monitor::Options o;
  o.token = "t";
  auto m = StartMonitor(o);
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());
  auto big = Http(port, "POST", "/api/stop", {{"Authorization", "Bearer t"}}, std::string(100 << 10, 'x'));
  EXPECT_EQ(big.status, 413) << big.error;
  EXPECT_TRUE(m->TakeCommands().empty());
  // The server still answers afterwards.
  EXPECT_EQ(Get(port, "/healthz").status, 200);
}

TEST(Monitor, ServesTheDashboard) {
  auto m = StartMonitor();
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());
  auto index = Get(port, "/");
  ASSERT_EQ(index.status, 200) << index.error;
  EXPECT_EQ(index.Header("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(index.body.find("dashboard.js"), std::string::npos);
  EXPECT_NE(index.Header("Content-Security-Policy").find("default-src 'self'"), std::string::npos);
  auto js = Get(port, "/dashboard.js");
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.Header("Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(Get(port, "/dashboard.css").status, 200);
  // Nothing outside the dashboard directory.
  EXPECT_EQ(Get(port, "/../CMakeLists.txt").status, 404);
  EXPECT_EQ(Get(port, "/%2e%2e/CMakeLists.txt").status, 404);
  EXPECT_EQ(Get(port, "/.hidden").status, 404);
  EXPECT_EQ(Get(port, "/nope.js").status, 404);
}

TEST(Monitor, TheBuiltInDashboardPathIsTheBuildTreeCopy) {
  // The test binary is build/tests/polis_ops_tests; CMake copies the
  // dashboard to build/launch/dashboard.
  auto m = Monitor::Start({});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto index = Get(PortOf((*m)->address()), "/");
  EXPECT_EQ(index.status, 200) << index.body;
}

TEST(Monitor, AMissingDashboardSaysWhy) {
  Monitor::Options o;
  o.dashboard_dir = "/nonexistent/dashboard";
  auto m = StartMonitor(o);
  ASSERT_TRUE(m);
  auto r = Get(PortOf(m->address()), "/");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("/nonexistent/dashboard/index.html"), std::string::npos) << r.body;
}

TEST(Monitor, BadListenAddresses) {
  for (const char* bad : {"nonsense", "127.0.0.1:http", "127.0.0.1:70000", "example.com:80", "1.2.3:5"}) {
    auto m = Monitor::Start(Listen(bad));
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), Code::kInvalidArgument) << bad << ": " << m.status().ToString();
  }
  auto first = StartMonitor();
  ASSERT_TRUE(first);
  const std::string taken = "127.0.0.1:" + std::to_string(PortOf(first->address()));
  auto second = Monitor::Start(Listen(taken));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kIo);
  EXPECT_NE(second.status().message().find(taken), std::string::npos) << second.status().ToString();
}

TEST(Monitor, LocalhostAndIpv6) {
  auto m = Monitor::Start(Listen("localhost:0"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE((*m)->address().starts_with("http://127.0.0.1:"));
  auto v6 = Monitor::Start(Listen("[::1]:0"));
  if (v6.ok()) {  // IPv6 may be off in a container
    EXPECT_TRUE((*v6)->address().starts_with("http://[::1]:")) << (*v6)->address();
  }
}

TEST(Monitor, PublishWhileClientsRead) {
  auto m = StartMonitor();
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());
  m->Publish(SampleStatus());
  std::atomic<bool> done{false};
  std::thread publisher([&] {
    for (int i = 0; !done; ++i) {
      json s = SampleStatus();
      s["step"] = i;
      m->Publish(std::move(s));
    }
  });
  std::vector<std::thread> readers;
  std::atomic<int> good{0};
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&] {
      for (int i = 0; i < 30; ++i) {
        auto r = Get(port, i % 2 ? "/metrics" : "/api/status");
        if (r.status == 200 && !r.body.empty()) good++;
      }
    });
  for (auto& r : readers) r.join();
  done = true;
  publisher.join();
  EXPECT_EQ(good, 90);
}

TEST(Monitor, DestructorReturnsWithAClientConnected) {
  auto m = StartMonitor();
  ASSERT_TRUE(m);
  const int port = PortOf(m->address());
  namespace net = boost::asio;
  net::io_context ioc;
  net::ip::tcp::socket idle(ioc);
  idle.connect({net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
  const auto t0 = std::chrono::steady_clock::now();
  m.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

}  // namespace
}  // namespace polis::coordinator
