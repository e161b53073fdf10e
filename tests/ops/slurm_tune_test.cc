// polis-tune --slurm on a real single-node Slurm cluster
// (launch/slurm/start-test-cluster.sh): each trial is a Slurm job submitted
// through `polis-run --slurm`; polis-tune is killed (SIGKILL) while they
// run and --resume re-attaches to the same Slurm jobs instead of
// submitting them again; the best model is published. Skipped (failed
// under CI=true) without root, slurm-wlm and munge, the built binaries or
// Fashion-MNIST.
#include <gtest/gtest.h>
#include "tests/prereq.h"

#include <fstream>

#include "launch/tune/study_state.h"
#include "tests/ops/ops_test_util.h"

namespace polis {
namespace {

using ops_test::kBin;
using ops_test::kSrc;
using ops_test::Shell;
using json = nlohmann::json;

TEST(SlurmTune, TrialsRunAsSlurmJobsAndResumeReattaches) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (SlurmUser=root)";
  const std::string missing = ops_test::MissingSlurmPrereq({"polis-train", "polis-tune"});
  if (!missing.empty()) POLIS_MISSING_PREREQ() << missing;

  ops_test::TempDir tmp;
  const std::string cluster = tmp.path() + "/cluster";
  ops_test::SlurmTestCluster slurm(cluster);
  ASSERT_EQ(slurm.start().exit_code, 0) << slurm.start().output << slurm.start().errors;
  const std::string conf = slurm.conf();

  std::ofstream(tmp.path() + "/mlp.pbtxt") << R"(name: "slurm_mlp"
model {
  layer { type: "Flatten" }
  layer { type: "Dense" activation: RELU dense_param { units: 16 } }
  layer { type: "Dense" dense_param { units: 10 } }
}
dataset { format: IDX dir: "fashion-mnist" train_limit: 1000 test_limit: 300 }
optimizer { type: ADAM learning_rate: 0.001 }
training { batch_size: 32 epochs: 1 seed: 5 }
sync { mode: ALLREDUCE servers: 0 }
registry { root: ")" << tmp.path() << R"(/registry" }
)";
  std::ofstream(tmp.path() + "/study.pbtxt") << R"(name: "slurm_grid"
base_job: "mlp.pbtxt"
param { field: "optimizer.learning_rate" choice { value: "0.001" value: "0.003" } }
sampler: GRID
objective { metric: "train_loss" direction: MINIMIZE }
workers: 1
)";
  const std::string sdir = tmp.path() + "/study";
  setenv("SLURM_CONF", conf.c_str(), 1);
  setenv("POLIS_BUILD_DIR", kBin.c_str(), 1);
  const pid_t tune = ops_test::Spawn({kBin + "/launch/polis-tune", "--slurm", "--parallel", "2", "--study-dir", sdir,
                                      tmp.path() + "/study.pbtxt"},
                                     tmp.path() + "/tune1.log");
  ASSERT_GT(tune, 0);
  // Kill polis-tune once both trials are Slurm jobs.
  std::set<long long> jobs;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && jobs.size() < 2) {
    auto s = tune::ReadStudyState(sdir);
    if (s.ok())
      for (const auto& t : s->trials)
        if (t.slurm_job > 0) jobs.insert(t.slurm_job);
    int status = 0;
    if (waitpid(tune, &status, WNOHANG) == tune) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  kill(tune, SIGKILL);
  waitpid(tune, nullptr, 0);
  ASSERT_EQ(jobs.size(), 2u) << ops_test::ReadOrEmpty(tmp.path() + "/tune1.log");

  auto resumed = Shell(kBin + "/launch/polis-tune --slurm --resume " + sdir);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output << resumed.errors
                                  << ops_test::ReadOrEmpty(tmp.path() + "/tune1.log")
                                  << Shell("tail -n 20 " + sdir + "/trials/*/slurm-*.out").output;
  // The jobs take seconds to start and train; the resume finds them queued or running.
  EXPECT_NE(resumed.output.find("re-attached to Slurm job"), std::string::npos) << resumed.output;
  auto s = tune::ReadStudyState(sdir);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->state, "done");
  EXPECT_EQ(s->end_reason, "the grid is done");
  ASSERT_EQ(s->trials.size(), 2u);
  for (const auto& t : s->trials) {
    EXPECT_EQ(t.state, "completed") << t.id << ": " << t.error;
    EXPECT_EQ(t.segments, 1) << t.id << " was submitted again";
    EXPECT_FALSE(ops_test::ReadOrEmpty(t.run_dir + "/result.json").empty()) << t.id;
  }
  json aliases = json::parse(ops_test::ReadOrEmpty(tmp.path() + "/registry/slurm_mlp/aliases.json"), nullptr, false);
  ASSERT_TRUE(aliases.is_object()) << resumed.output;
  EXPECT_GT(aliases["aliases"].value("best", 0), 0) << aliases.dump();
  unsetenv("SLURM_CONF");
}

}  // namespace
}  // namespace polis
