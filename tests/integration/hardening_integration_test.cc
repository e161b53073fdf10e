// What a hostile user found, kept as real-process regression tests: a job
// that diverges is stopped and never published; a resume with another model
// or optimizer is refused before anything is read; a finished run can be
// resumed to publish again; a failed publish keeps the verified model and
// says how to publish it later.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "tests/prereq.h"

#include "common/artifact/artifact.h"
#include "common/checkpoint.h"
#include "tests/integration/shell.h"

namespace polis {
namespace {

using namespace polis::it;
using json = nlohmann::json;

// Small and quick: 2 workers, 1 server, one epoch of 1500 images.
const std::string kLimits = " -- --train-limit 1500 --test-limit 300";
const std::string kSmall = "--workers 2 --servers 1 --epochs 1" + kLimits;

class Hardening : public FashionJobTest {
 protected:
  ShellRun Run(const std::string& job, const std::string& run, const std::string& args,
               const std::string& registry = "") {
    return Shell(PolisRun("--registry " + (registry.empty() ? dir_ + "/registry" : registry) + " --run-dir " +
                          dir_ + "/" + run + " " + job + " " + args));
  }
  std::string Job(const std::string& name, const std::vector<std::pair<std::string, std::string>>& edits) {
    return JobVariant(dir_, name, edits);
  }
  bool HasVersions(const std::string& registry, const std::string& model) {
    auto v = ListVersions(registry, model);
    return v.ok() && !v->empty();
  }
};

// Settings within their ranges that still diverge (SGD whose decay
// multiplies every weight by -1e6 a step) stop the job at the first bad
// step, naming the step and the layer; nothing is published.
TEST_F(Hardening, DivergingTrainingStopsAndPublishesNothing) {
  const std::string job =
      Job("diverge.pbtxt", {{"optimizer { type: ADAM learning_rate: 0.001 beta1: 0.9 beta2: 0.999 epsilon: 1e-7 }",
                             "optimizer { type: SGD learning_rate: 1000 weight_decay: 1000 }"}});
  ShellRun r = Run(job, "run", kSmall);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step "), std::string::npos) << r.output;
  EXPECT_TRUE(r.output.find("layer '") != std::string::npos || r.output.find("the loss is") != std::string::npos)
      << r.output;
  EXPECT_FALSE(HasVersions(dir_ + "/registry", "fashion_cnn"));
  json result = ReadJson(dir_ + "/run/result.json");
  EXPECT_TRUE(!result.is_object() || result.value("state", "") != "done") << result.dump();
}

class ResumeHardening : public Hardening {
 protected:
  void SetUp() override {
    Hardening::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ShellRun r = Run(kSrc + "/jobs/fashion_cnn.pbtxt", "run", kSmall);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    job_before_ = *ReadFile(dir_ + "/run/job.pbtxt");
  }
  ShellRun Resume(const std::string& job, const std::string& args, const std::string& registry = "") {
    return Shell(PolisRun("--resume " + dir_ + "/run --registry " +
                          (registry.empty() ? dir_ + "/registry" : registry) + " " + job + " " + args +
                          kLimits));
  }
  void ExpectRunUntouched() { EXPECT_EQ(*ReadFile(dir_ + "/run/job.pbtxt"), job_before_); }
  std::string job_before_;
};

// Dense 64 -> 32 (fewer parameters) and 64 -> 128 (more): refused before any
// rank reads the checkpoint, naming the field; the run's job.pbtxt stays.
TEST_F(ResumeHardening, AnotherModelIsRefusedNamingTheField) {
  for (const char* units : {"32", "128"}) {
    const std::string job = Job(std::string("units") + units + ".pbtxt",
                                {{"dense_param { units: 64 }", std::string("dense_param { units: ") + units + " }"},
                                 {"expect_parameters: 93322", ""}});
    ShellRun r = Resume(job, "--workers 2 --epochs 2");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("model.layer[6].dense_param.units"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("double free"), std::string::npos) << r.output;
    ExpectRunUntouched();
  }
}

TEST_F(ResumeHardening, ChangedLearningRateOrSeedIsRefused) {
  for (const auto& [from, to, field] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"learning_rate: 0.001", "learning_rate: 0.01", "optimizer.learning_rate"},
           {"seed: 42", "seed: 7", "training.seed"}}) {
    ShellRun r = Resume(Job("changed.pbtxt", {{from, to}}), "--workers 2 --epochs 2");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("'" + field + "'"), std::string::npos) << r.output;
    ExpectRunUntouched();
  }
}

// The run finished its only epoch; resuming it with --epochs 1 and another
// registry publishes the trained model there instead of failing.
TEST_F(ResumeHardening, FinishedRunResumedPublishesAgain) {
  const std::string other = dir_ + "/other-registry";
  ShellRun r = Resume("", "--workers 2 --epochs 1", other);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("nothing is left to train"), std::string::npos) << r.output;
  auto published = LoadVersion(other, "fashion_cnn", 1);
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  auto kept = ReadArtifactFile(dir_ + "/run/model.polis");
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(published->weights, kept->weights);
  json result = ReadJson(dir_ + "/run/result.json");
  EXPECT_EQ(result.value("state", ""), "done") << result.dump();
  EXPECT_EQ(result.value("version", 0), 1) << result.dump();
}

// A registry that cannot be written (its root is a file): training ends,
// publishing fails (exit 1) naming the path; the verified model and
// result.json stay in the run directory, and publishing later works.
TEST_F(Hardening, FailedPublishKeepsTheModelAndPublishesLater) {
  const std::string bad = dir_ + "/not-a-dir";
  std::ofstream(bad) << "a file, not a registry\n";
  ShellRun r = Run(kSrc + "/jobs/fashion_cnn.pbtxt", "run", kSmall, bad);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;
  json result = ReadJson(dir_ + "/run/result.json");
  EXPECT_EQ(result.value("state", ""), "publish_failed") << result.dump();
  EXPECT_FALSE(result.value("publish_error", "").empty()) << result.dump();
  EXPECT_NE(result.value("publish_later", "").find("polis-registry publish"), std::string::npos) << result.dump();
  ASSERT_TRUE(ReadArtifactFile(dir_ + "/run/model.polis").ok());

  // Later, with the registry fixed: the CLI publishes the kept model...
  const std::string good = dir_ + "/registry";
  ShellRun cli = Shell(kBin + "/registry/polis-registry publish --root " + good + " --model fashion_cnn " + dir_ +
                       "/run/model.polis");
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  EXPECT_TRUE(LoadVersion(good, "fashion_cnn", 1).ok());
  // ...and a resume publishes it too, but never the same bytes twice: the
  // registry that already holds it keeps one version.
  ShellRun again = Shell(PolisRun("--resume " + dir_ + "/run --registry " + good + " --workers 2 --epochs 1" + kLimits));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("already version 1"), std::string::npos) << again.output;
  EXPECT_FALSE(LoadVersion(good, "fashion_cnn", 2).ok());
  const std::string other = dir_ + "/other";
  ShellRun elsewhere = Shell(PolisRun("--resume " + dir_ + "/run --registry " + other + " --workers 2 --epochs 1" + kLimits));
  ASSERT_EQ(elsewhere.exit_code, 0) << elsewhere.output;
  EXPECT_TRUE(LoadVersion(other, "fashion_cnn", 1).ok());
}

// A worker stopped with SIGSTOP holds the other one in BSP. Only the
// stopped worker (whose push the server waits for) is "stalled"; the one
// waiting for it is not; at the heartbeat deadline the coordinator names
// that rank alone and stops the job.
TEST_F(Hardening, OnlyTheStoppedWorkerIsBlamedForAStall) {
  const std::string run = dir_ + "/run";
  ShellRun job;
  // The stall mark needs 30 s of silence; the coordinator gives up after 40.
  std::thread t([&] {
    job = Shell("POLIS_TIMEOUT_S=90 POLIS_HEARTBEAT_TIMEOUT_S=40 " + PolisRun("--workers 2 --servers 1 --epochs 1 --registry " + dir_ +
                                                 "/registry --run-dir " + run + " " + kSrc +
                                                 "/jobs/fashion_cnn.pbtxt -- --train-limit 20000 --test-limit 300"));
  });
  const std::string ctl = kBin + "/launch/polisctl";
  int stopped = -1;
  nlohmann::json stalled_status;
  for (int i = 0; i < 900 && stalled_status.is_null(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ShellRun s = Shell(ctl + " status --json --run-dir " + run);
    auto j = nlohmann::json::parse(s.output, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    if (stopped < 0 && j.contains("step") && j["step"].is_number() && j["step"].get<int>() > 0) {
      stopped = RankPids(run, 4)[3];  // worker rank 3
      if (stopped > 0) kill(stopped, SIGSTOP);
    }
    if (stopped > 0 && j.contains("stalled") && !j["stalled"].empty()) stalled_status = j;
  }
  t.join();
  if (stopped > 0) kill(stopped, SIGCONT);
  ASSERT_GT(stopped, 0) << job.output;
  ASSERT_FALSE(stalled_status.is_null()) << job.output;
  EXPECT_EQ(stalled_status["stalled"], json::array({3})) << stalled_status.dump();
  EXPECT_NE(job.exit_code, 0);
  EXPECT_NE(job.output.find("the job waits on rank 3 (worker"), std::string::npos) << job.output;
  EXPECT_EQ(job.output.find("rank 2 (worker"), std::string::npos) << job.output;
  EXPECT_NE(job.output.find("heartbeat deadline"), std::string::npos) << job.output;
}

}  // namespace
}  // namespace polis
