// polis-tune's study server (launch/tune/study_server.h) on a real socket:
// the study document with the running trials' dashboards, the study page,
// the study's Prometheus text, tune.json while it serves and after, and a
// bad address refused with a line naming it.
#include "launch/tune/study_server.h"

#include <gtest/gtest.h>

#include "coordinator/monitor.h"
#include "tests/ops/ops_test_util.h"
#include "tests/ops/prometheus_parse.h"
#include "tests/ops/study_test_util.h"

namespace polis::tune {
namespace {

using json = nlohmann::json;
using ops_test::Get;
using ops_test::PortOf;

class StudyServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    study_ = ops_test::SampleStudy(dir_.path());
    ops_test::WriteTrialCoordinator(study_.trials[2].run_dir, "http://127.0.0.1:45678");
    auto server = StudyServer::Start("127.0.0.1:0", dir_.path(), ops_test::kSrc + "/launch/dashboard");
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    server_->Publish(study_);
  }

  int Port() const { return PortOf(server_->address()); }

  ops_test::TempDir dir_;
  StudyState study_;
  std::unique_ptr<StudyServer> server_;
};

TEST_F(StudyServerTest, ServesTheStudyDocumentWithTheRunningTrialsDashboards) {
  auto r = Get(Port(), "/api/study");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.Header("Content-Type"), "application/json");
  json doc = json::parse(r.body);
  json want = StudyJson(study_);
  want["trials"][2]["dashboard"] = "http://127.0.0.1:45678";
  EXPECT_EQ(doc, want);
  EXPECT_EQ(doc["best"]["trial"], "0001");

  // Each publish replaces the document.
  study_.trials[2].curve.emplace_back(3, 0.77);
  study_.trials[2].epochs_done = 3;
  study_.trials[2].state = "paused";
  server_->Publish(study_);
  doc = json::parse(Get(Port(), "/api/study").body);
  EXPECT_EQ(doc["trials"][2]["epochs_done"], 3);
  EXPECT_FALSE(doc["trials"][2].contains("dashboard")) << "only running trials link their dashboard";
}

TEST_F(StudyServerTest, ATrialWhoseCoordinatorIsGoneHasNoDashboard) {
  // A pid that is not running on this host.
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  std::ofstream(study_.trials[2].run_dir + "/coordinator.json")
      << json{{"pid", 999999999}, {"host", host}, {"address", "http://127.0.0.1:1"}}.dump();
  EXPECT_FALSE(StudyDocument(study_)["trials"][2].contains("dashboard"));
  // On another host the pid cannot be checked: the address is shown.
  std::ofstream(study_.trials[2].run_dir + "/coordinator.json")
      << json{{"pid", 999999999}, {"host", "node-7"}, {"address", "http://node-7:40000"}}.dump();
  EXPECT_EQ(StudyDocument(study_)["trials"][2].value("dashboard", ""), "http://node-7:40000");
}

TEST_F(StudyServerTest, ServesTheStudyPageAndOnlyStudyEndpoints) {
  auto page = Get(Port(), "/");
  ASSERT_EQ(page.status, 200) << page.error;
  EXPECT_NE(page.body.find("<script src=\"study.js\""), std::string::npos) << page.body;
  EXPECT_EQ(page.Header("Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(Get(Port(), "/study.js").status, 200);
  EXPECT_EQ(Get(Port(), "/common.js").status, 200);
  EXPECT_EQ(Get(Port(), "/dashboard.css").status, 200);
  EXPECT_EQ(Get(Port(), "/healthz").body, "ok\n");
  EXPECT_EQ(Get(Port(), "/api/status").status, 404);
  // No token: the job commands are refused.
  EXPECT_EQ(ops_test::Http(Port(), "POST", "/api/stop").status, 403);
  EXPECT_EQ(ops_test::Http(Port(), "POST", "/api/study").status, 405);
}

TEST_F(StudyServerTest, MetricsAreWellFormedPrometheusText) {
  auto r = Get(Port(), "/metrics");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.Header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  ops_test::ParsedMetrics p = ops_test::ParseExposition(r.body);
  for (const auto& problem : p.problems) ADD_FAILURE() << problem;
  EXPECT_EQ(r.body.find("polis_job_"), std::string::npos) << "a study serves no job metrics:\n" << r.body;
  EXPECT_EQ(p.samples[R"(polis_study_info{study="fashion_cnn_asha",state="running",objective="val_accuracy",direction="MAXIMIZE"})"], 1)
      << r.body;
  EXPECT_EQ(p.samples[R"(polis_study_trials{state="running"})"], 1);
  EXPECT_EQ(p.samples[R"(polis_study_trials{state="stopped"})"], 2);
  EXPECT_EQ(p.samples[R"(polis_study_trials{state="completed"})"], 1);
  EXPECT_EQ(p.samples[R"(polis_study_trials{state="failed"})"], 1);
  EXPECT_EQ(p.samples[R"(polis_study_trials{state="paused"})"], 1);
  EXPECT_DOUBLE_EQ(p.samples["polis_study_best_value"], 0.88);
  EXPECT_EQ(p.samples["polis_study_best_trial"], 1);
  EXPECT_EQ(p.type["polis_study_epochs_total"], "counter");
  EXPECT_EQ(p.samples["polis_study_epochs_total"], 1 + 9 + 2 + 1 + 3 + 1);
  EXPECT_EQ(p.samples["polis_study_elapsed_seconds"], 754);
  EXPECT_DOUBLE_EQ(p.samples[R"(polis_study_trial_value{trial="0004"})"], 0.74);
  EXPECT_EQ(p.samples[R"(polis_study_trial_epochs{trial="0001"})"], 9);
}

TEST(StudyMetrics, AStudyWithoutTrialsHasNoBestAndZeroCounts) {
  StudyState s;
  s.name = "empty \"study\"";
  s.objective = "val_loss";
  s.maximize = false;
  const std::string text = StudyPrometheusText(StudyJson(s));
  ops_test::ParsedMetrics p = ops_test::ParseExposition(text);
  for (const auto& problem : p.problems) ADD_FAILURE() << problem;
  EXPECT_EQ(text.find("polis_study_best_value"), std::string::npos) << text;
  EXPECT_EQ(p.samples[R"(polis_study_trials{state="running"})"], 0);
  EXPECT_NE(text.find(R"(study="empty \"study\"")"), std::string::npos) << text;
  EXPECT_EQ(StudyPrometheusText(json::array()), "");
}

TEST_F(StudyServerTest, TuneJsonNamesTheServerUntilItEnds) {
  auto info = RunningTuneInfo(dir_.path());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->value("address", ""), server_->address());
  EXPECT_EQ(info->value("pid", 0LL), static_cast<long long>(getpid()));
  EXPECT_FALSE(info->value("host", "").empty());
  server_.reset();
  json ended = json::parse(ops_test::ReadOrEmpty(dir_.path() + "/tune.json"));
  EXPECT_TRUE(ended.contains("ended_at")) << ended.dump();
  EXPECT_FALSE(RunningTuneInfo(dir_.path()).has_value());
}

TEST(StudyServer, ATuneJsonOfADeadProcessIsNotRunning) {
  ops_test::TempDir dir;
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  std::ofstream(dir.path() + "/tune.json") << json{{"pid", 999999999}, {"host", host}, {"address", "http://x:1"}}.dump();
  EXPECT_FALSE(RunningTuneInfo(dir.path()).has_value());
  EXPECT_FALSE(RunningTuneInfo(dir.path() + "/nowhere").has_value());
}

TEST(StudyServer, ABadAddressIsNamed) {
  ops_test::TempDir dir;
  auto s = StudyServer::Start("localhost:http", dir.path());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
  EXPECT_NE(s.status().message().find("'localhost:http'"), std::string::npos) << s.status().message();
  EXPECT_FALSE(PathExists(dir.path() + "/tune.json"));
}

}  // namespace
}  // namespace polis::tune
