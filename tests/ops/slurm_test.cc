// launch/slurm/: a real single-node Slurm cluster (start-test-cluster.sh),
// polis.sbatch running a small job through the time-limit warning
// (checkpoint, stop, requeue, resume), and stop-test-cluster.sh stopping
// every daemon. Skipped without root, Debian's slurm-wlm and munge, a built
// polis-train or the Fashion-MNIST files.
#include <gtest/gtest.h>
#include "tests/prereq.h"

#include <fstream>
#include <iterator>
#include <sstream>

#include "tests/ops/ops_test_util.h"

namespace polis {
namespace {

using ops_test::kBin;
using ops_test::kSrc;
using ops_test::Shell;
using json = nlohmann::json;

std::string Field(const std::string& text, const std::string& key) {
  const size_t at = text.find(key + "=");
  if (at == std::string::npos) return "";
  const size_t from = at + key.size() + 1;
  return text.substr(from, text.find_first_of(" \n", from) - from);
}

bool Alive(const std::string& pidfile) {
  const std::string pid = ops_test::ReadOrEmpty(pidfile);
  return !pid.empty() && kill(std::atoi(pid.c_str()), 0) == 0;
}

TEST(Slurm, SbatchTemplateCheckpointsRequeuesAndResumes) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (SlurmUser=root)";
  const std::string missing = ops_test::MissingSlurmPrereq({"polis-train", "polisctl"});
  if (!missing.empty()) POLIS_MISSING_PREREQ() << missing;

  ops_test::TempDir tmp;
  const std::string cluster = tmp.path() + "/cluster";
  ops_test::SlurmTestCluster slurm(cluster);
  ASSERT_EQ(slurm.start().exit_code, 0) << slurm.start().output << slurm.start().errors;
  const std::string env = slurm.env();

  const std::string run_dir = tmp.path() + "/run";
  auto submit = Shell(
      env + "sbatch --parsable --chdir=" + kSrc + " --output=" + tmp.path() + "/job-%j.out" +
      " --export=ALL,POLIS_JOB=jobs/fashion_cnn.pbtxt,POLIS_BUILD_DIR=" + kBin + ",POLIS_RUN_DIR=" +
      run_dir + ",POLIS_TRAIN_ARGS=\"--epochs 3 --train-limit 12000 --test-limit 1000 --registry " +
      tmp.path() + "/registry\" " + kSrc + "/launch/slurm/polis.sbatch");
  ASSERT_EQ(submit.exit_code, 0) << submit.errors;
  const std::string job = submit.output.substr(0, submit.output.find_first_of(";\n"));

  // Once the first epoch is done, warn the batch shell as the time limit would.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline &&
         ops_test::ReadOrEmpty(run_dir + "/metrics.jsonl").empty()) {
    const std::string state = Field(Shell(env + "scontrol show job " + job).output, "JobState");
    if (state != "PENDING" && state != "RUNNING") break;  // ended early: the assertion below shows why
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_FALSE(ops_test::ReadOrEmpty(run_dir + "/metrics.jsonl").empty())
      << "no epoch finished:\n" << Shell(env + "scontrol show job " + job).output
      << ops_test::ReadOrEmpty(tmp.path() + "/job-" + job + ".out")
      << ops_test::ReadOrEmpty(run_dir + "/stderr.log") << Shell("tail -n 30 " + cluster + "/log/*.log").output;
  // The cluster view finds the running job through squeue (polis.sbatch
  // starts polis-train itself: no jobs-directory record).
  ASSERT_EQ(Shell("mkdir -p " + tmp.path() + "/jobs").exit_code, 0);
  auto view = Shell(env + kBin + "/launch/polisctl cluster --json --jobs-dir " + tmp.path() + "/jobs");
  json cluster_view = json::parse(view.output, nullptr, false);
  ASSERT_TRUE(cluster_view.is_object()) << view.output << view.errors;
  EXPECT_TRUE(cluster_view["slurm"].value("available", false)) << cluster_view["slurm"].dump();
  bool listed = false;
  for (const auto& j : cluster_view["jobs"]) {
    if (j.value("slurm_job_id", "") != job) continue;
    listed = true;
    EXPECT_EQ(j.value("state", ""), "running") << j.dump();
    EXPECT_EQ(j.value("launcher", ""), "slurm") << j.dump();
  }
  EXPECT_TRUE(listed) << "job " << job << " not in polisctl cluster:\n" << view.output;
  ASSERT_EQ(Shell(env + "scancel --signal=USR1 --batch " + job).exit_code, 0);

  std::string info;
  while (std::chrono::steady_clock::now() < deadline + std::chrono::seconds(60)) {
    info = Shell(env + "scontrol show job " + job).output;
    const std::string state = Field(info, "JobState");
    if (state == "FAILED" || state == "CANCELLED" || state == "TIMEOUT") break;
    if (state == "COMPLETED" && Field(info, "Restarts") == "1") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  const std::string out = ops_test::ReadOrEmpty(tmp.path() + "/job-" + job + ".out");
  EXPECT_EQ(Field(info, "JobState"), "COMPLETED") << info << out;
  EXPECT_EQ(Field(info, "Restarts"), "1") << info;
  EXPECT_NE(out.find("sent SIGTERM to the coordinator"), std::string::npos) << out;
  EXPECT_NE(out.find("requeueing job"), std::string::npos) << out;
  EXPECT_NE(out.find("polis: resuming from"), std::string::npos) << out;
  json result = json::parse(ops_test::ReadOrEmpty(run_dir + "/result.json"), nullptr, false);
  EXPECT_TRUE(result.is_object() && result.contains("test_accuracy")) << result.dump();

  // The stop script stops every daemon by its pid file.
  auto down = slurm.Stop();
  EXPECT_EQ(down.exit_code, 0) << down.errors;
  for (const char* daemon : {"slurmd", "slurmctld", "munged"})
    EXPECT_FALSE(Alive(cluster + "/run/" + daemon + ".pid")) << daemon << " still runs";
}

// PID of the job step's task `procid` (its SLURM_PROCID) training in run_dir.
int TaskPid(const std::string& run_dir, int procid) {
  auto r = Shell("pgrep -f 'polis-train .*--run-dir " + run_dir + "'");
  std::istringstream in(r.output);
  for (int pid; in >> pid;) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);  // size 0 to stat
    const std::string env((std::istreambuf_iterator<char>(f)), {});
    const std::string key = std::string("SLURM_PROCID=") + std::to_string(procid) + '\0';
    if (env.find(key) != std::string::npos) return pid;
  }
  return -1;
}

// POLIS_MAX_RESTARTS: a worker killed inside the allocation is named, the
// step runs again from the newest checkpoint without a requeue, and the
// run's result and restarts.jsonl say so.
TEST(Slurm, SbatchRestartsAKilledStepFromItsCheckpoint) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (SlurmUser=root)";
  const std::string missing = ops_test::MissingSlurmPrereq({"polis-train", "polisctl"});
  if (!missing.empty()) POLIS_MISSING_PREREQ() << missing;

  ops_test::TempDir tmp;
  const std::string cluster = tmp.path() + "/cluster";
  ops_test::SlurmTestCluster slurm(cluster);
  ASSERT_EQ(slurm.start().exit_code, 0) << slurm.start().output << slurm.start().errors;
  const std::string env = slurm.env();

  const std::string run_dir = tmp.path() + "/run";
  auto submit = Shell(
      env + "sbatch --parsable --no-requeue --chdir=" + kSrc + " --output=" + tmp.path() + "/job-%j.out" +
      " --export=ALL,POLIS_MAX_RESTARTS=2,POLIS_JOB=jobs/fashion_cnn.pbtxt,POLIS_BUILD_DIR=" + kBin +
      ",POLIS_RUN_DIR=" + run_dir + ",POLIS_TRAIN_ARGS=\"--epochs 4 --train-limit 12000 --test-limit 1000 --registry " +
      tmp.path() + "/registry\" " + kSrc + "/launch/slurm/polis.sbatch");
  ASSERT_EQ(submit.exit_code, 0) << submit.errors;
  const std::string job = submit.output.substr(0, submit.output.find_first_of(";\n"));

  // After the first epoch's checkpoint, SIGKILL the last task (a worker).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  int victim = -1;
  while (std::chrono::steady_clock::now() < deadline && victim < 0) {
    if (!ops_test::ReadOrEmpty(run_dir + "/metrics.jsonl").empty()) victim = TaskPid(run_dir, 3);
    const std::string state = Field(Shell(env + "scontrol show job " + job).output, "JobState");
    if (state != "PENDING" && state != "RUNNING") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_GT(victim, 0) << "no epoch finished:\n" << ops_test::ReadOrEmpty(tmp.path() + "/job-" + job + ".out")
                       << ops_test::ReadOrEmpty(run_dir + "/stderr.log");
  ASSERT_EQ(kill(victim, SIGKILL), 0);

  std::string info;
  while (std::chrono::steady_clock::now() < deadline + std::chrono::seconds(120)) {
    info = Shell(env + "scontrol show job " + job).output;
    const std::string state = Field(info, "JobState");
    if (state != "PENDING" && state != "RUNNING" && state != "COMPLETING") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  const std::string out = ops_test::ReadOrEmpty(tmp.path() + "/job-" + job + ".out");
  EXPECT_EQ(Field(info, "JobState"), "COMPLETED") << info << out;
  EXPECT_EQ(Field(info, "Restarts"), "0") << info;  // restarted inside the allocation, not requeued
  EXPECT_NE(out.find("rank 3 (worker)"), std::string::npos) << out;
  EXPECT_NE(out.find("restart 1 of 2"), std::string::npos) << out;
  EXPECT_NE(out.find("polis: resuming from"), std::string::npos) << out;
  const std::string restarts = ops_test::ReadOrEmpty(run_dir + "/restarts.jsonl");
  json line = json::parse(restarts.substr(0, restarts.find('\n')), nullptr, false);
  ASSERT_TRUE(line.is_object()) << restarts;
  EXPECT_EQ(line["action"], "resume") << restarts;
  EXPECT_NE(line["cause"].get<std::string>().find("rank 3 (worker)"), std::string::npos) << restarts;
  json result = json::parse(ops_test::ReadOrEmpty(run_dir + "/result.json"), nullptr, false);
  ASSERT_TRUE(result.is_object()) << out;
  EXPECT_EQ(result["restarts"], 1) << result.dump();
  EXPECT_EQ(result["history"].size(), 4u) << result.dump();
}

}  // namespace
}  // namespace polis
