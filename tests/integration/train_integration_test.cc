// Integration: real mpirun, real processes (1 coordinator + 1 server + 2
// workers), real Fashion-MNIST (a subset), a real registry directory.
#include <gtest/gtest.h>
#include "tests/prereq.h"
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/fs.h"
#include "tests/integration/shell.h"

namespace polis {
namespace {

using namespace polis::it;

class TrainIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveFashionMnist())
      POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist); "
                      "launch/install-deps.sh installs it";
    char tmpl[] = "/tmp/polis-it-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }
  std::string dir_;
};

// The accuracy bar for 2 epochs on 6000 images (a fifth of an epoch of the
// full set twice over): chance is 0.10; this network reaches about 0.77.
constexpr double kAccuracyBar = 0.70;

TEST_F(TrainIntegration, ParameterServerJobTrainsPublishesAndReloads) {
  std::string cmd = "POLIS_BUILD_DIR=" + kBin + " " + kSrc + "/launch/polis-run --workers 2 --servers 1 " +
                    "--epochs 2 --registry " + dir_ + "/registry --run-dir " + dir_ + "/run " + kSrc +
                    "/jobs/fashion_cnn.pbtxt -- --train-limit 6000 --test-limit 2000";
  ShellRun r = Shell(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("epoch 2/2"), std::string::npos) << r.output;

  auto text = ReadFile(dir_ + "/run/result.json");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  auto result = nlohmann::json::parse(*text);
  for (const char* key : {"test_accuracy", "epochs", "train_seconds", "images_per_second", "model",
                          "version", "artifact"})
    EXPECT_TRUE(result.contains(key)) << key;
  EXPECT_EQ(result["epochs"], 2);
  EXPECT_EQ(result["model"], "fashion_cnn");
  EXPECT_EQ(result["version"], 1);
  EXPECT_GT(result["test_accuracy"].get<double>(), kAccuracyBar) << *text;
  // Accuracy rises from epoch 1 to epoch 2 is not guaranteed on a subset;
  // the loss on the training data must fall.
  EXPECT_LT(result["history"][1]["train_loss"].get<double>(), result["history"][0]["train_loss"].get<double>());
  // Every training sample was processed exactly once per epoch.
  for (const auto& h : result["history"]) EXPECT_EQ(h["train_samples"], 6000);
  // Each row says when its epoch ended (Unix seconds), in order.
  const double now = static_cast<double>(std::time(nullptr));
  const auto& rows = result["history"];
  EXPECT_GT(rows[0]["time"].get<double>(), now - 600);
  EXPECT_LE(rows[0]["time"].get<double>(), rows[1]["time"].get<double>());
  EXPECT_LE(rows[1]["time"].get<double>(), now + 1);

  // The artifact loads, verifies and reproduces the accuracy.
  std::string artifact = result["artifact"];
  auto loaded = ReadArtifactFile(artifact);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->weights.size(), 93322u);
  // The lineage names the commit the binaries were built from, not the one
  // the build directory was first configured at.
  ShellRun head = Shell("git -C " + kSrc + " rev-parse --short=12 HEAD 2>/dev/null");
  const std::string rev = loaded->header.lineage().source_revision();
  if (head.exit_code == 0)
    EXPECT_EQ(rev.substr(0, 12), head.output.substr(0, 12)) << "built from " << rev;
  else
    EXPECT_EQ(rev, "unknown");
  // What users read: the job's class names, the descriptions Polis wrote
  // from the dataset, the samples it was trained on.
  const proto::ArtifactHeader& h = loaded->header;
  ASSERT_EQ(h.class_names_size(), 10);
  EXPECT_EQ(h.class_names(0), "T-shirt/top");
  EXPECT_EQ(h.class_names(7), "Sneaker");
  EXPECT_EQ(h.class_names(9), "Ankle boot");
  EXPECT_EQ(h.input_description(), "1x28x28 grey image, pixel value * 0.00392 + 0");
  EXPECT_EQ(h.output_description(),
            "probabilities of 10 classes: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, "
            "Ankle boot");
  EXPECT_EQ(h.train_samples(), 6000);
  EXPECT_EQ(h.validation_samples(), 0);
  EXPECT_EQ(h.test_samples(), 2000);
  EXPECT_NE(h.job().model_card().description().find("Fashion-MNIST"), std::string::npos);
  EXPECT_EQ(result["reloaded_test_accuracy"], result["test_accuracy"]);
  ShellRun ev = Shell(kBin + "/launch/polis-train --evaluate " + artifact + " --test-limit 2000 " + kSrc +
                 "/jobs/fashion_cnn.pbtxt");
  ASSERT_EQ(ev.exit_code, 0) << ev.output;
  auto evj = nlohmann::json::parse(ev.output.substr(ev.output.find('{')));
  EXPECT_NEAR(evj["test_accuracy"].get<double>(), result["test_accuracy"].get<double>(), 1e-6);
  ShellRun verify = Shell(kBin + "/registry/polis-registry verify --root " + dir_ + "/registry fashion_cnn");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  // A second run publishes version 2; a corrupted version is refused.
  std::ofstream(artifact, std::ios::binary | std::ios::in | std::ios::out).seekp(1000).put('\x7f');
  ShellRun bad = Shell(kBin + "/registry/polis-registry verify --root " + dir_ + "/registry fashion_cnn 1");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("checksum mismatch"), std::string::npos) << bad.output;
}

// All-reduce: no servers, every worker applies the same update; with
// verify_replicas every step checks that all replicas are bit-identical
// (with local SGD or delayed averaging: wherever they must agree, and at
// least at every epoch's end). `sync` replaces the job's bucket_bytes line;
// `training` its training block.
void AllReduceRun(const std::string& dir, const std::string& compression,
                  const std::string& sync = "bucket_bytes: 16384 verify_replicas: true",
                  const std::string& training = "training { batch_size: 32 epochs: 5 seed: 42 }") {
  std::string job = JobVariant(dir, "ar.pbtxt",
                               {{"compression: NONE", "compression: " + compression},
                                {"bucket_bytes: -1", sync},
                                {"training { batch_size: 32 epochs: 5 seed: 42 }", training}},
                               "fashion_cnn_allreduce.pbtxt");
  ShellRun r = Shell(PolisRun("--workers 2 --epochs 2 --registry " + dir + "/registry --run-dir " + dir +
                              "/run " + job + " -- --train-limit 6000 --test-limit 2000"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto result = ReadJson(dir + "/run/result.json");
  EXPECT_EQ(result["sync"], "ALLREDUCE");
  EXPECT_EQ(result["servers"], 0);
  EXPECT_GT(result["test_accuracy"].get<double>(), kAccuracyBar) << result.dump();
  EXPECT_EQ(result["reloaded_test_accuracy"], result["test_accuracy"]);
  for (const auto& h : result["history"]) {
    EXPECT_TRUE(h["replicas_identical"].get<bool>());
    EXPECT_EQ(h["train_samples"], 6000);
  }
}

TEST_F(TrainIntegration, AllReduceJobKeepsReplicasBitIdentical) { AllReduceRun(dir_, "NONE"); }
TEST_F(TrainIntegration, AllReduceWithBf16Gradients) { AllReduceRun(dir_, "BF16"); }
// Local SGD and delayed averaging over real MPI processes, each with a
// checkpoint every 40 steps mid-epoch (local SGD averages parameters and
// optimizer state for it; delayed averaging applies the sums in flight).
TEST_F(TrainIntegration, AllReduceLocalSgdWithCheckpoints) {
  AllReduceRun(dir_, "BF16", "local_steps: 4 verify_replicas: true",
               "training { batch_size: 32 epochs: 5 seed: 42 checkpoint_every_steps: 40 }");
}
TEST_F(TrainIntegration, AllReduceDelayedAveragingWithCheckpoints) {
  AllReduceRun(dir_, "NONE", "delayed_averaging: true verify_replicas: true",
               "training { batch_size: 32 epochs: 5 seed: 42 checkpoint_every_steps: 40 }");
}

// DP-SGD over real MPI processes: the job key reaches every rank, the
// workers' Poisson samples and the replicas' noise agree (replicas stay
// bit-identical), and the guarantee is printed, recorded and published.
TEST_F(TrainIntegration, DpSgdJobAccountsAndPublishesItsGuarantee) {
  std::string job = JobVariant(dir_, "dp.pbtxt", {{"sync { mode: ALLREDUCE servers: 0 }",
                                                   "sync { mode: ALLREDUCE servers: 0 verify_replicas: true }"}},
                               "fashion_cnn_dp.pbtxt");
  ShellRun r = Shell(PolisRun("--workers 2 --epochs 1 --registry " + dir_ + "/registry --run-dir " + dir_ +
                              "/run " + job + " -- --train-limit 4096 --test-limit 1000"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // 4096 samples, 2 workers × 1024 expected a step: 2 steps.
  EXPECT_NE(r.output.find("DP-SGD: epsilon 3 at delta 1e-05 after the 2 planned steps (target 3)"),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ε 3"), std::string::npos) << r.output;
  auto result = ReadJson(dir_ + "/run/result.json");
  ASSERT_TRUE(result.contains("privacy")) << result.dump();
  EXPECT_EQ(result["privacy"]["steps"], 2);
  EXPECT_LE(result["privacy"]["epsilon"].get<double>(), 3.0);
  EXPECT_TRUE(result["history"][0]["replicas_identical"].get<bool>());
  EXPECT_EQ(result["history"][0]["steps"], 2);
  ShellRun show = Shell(kBin + "/launch/polisctl models --root " + dir_ + "/registry show fashion_cnn_dp");
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("DP-SGD, epsilon 3 at delta 1e-05 (rdp accountant, poisson sampling)"),
            std::string::npos) << show.output;
  // The card: the classes, the descriptions, the samples, the guarantee.
  for (const char* want : {"Ankle boot", "1x28x28 grey image", "probabilities of 10 classes: T-shirt/top",
                           "4096 train, 0 validation, 1000 test", "lineage job_file:"})
    EXPECT_NE(show.output.find(want), std::string::npos) << "'" << want << "' not in:\n" << show.output;
  ShellRun card = Shell(kBin + "/launch/polisctl models --root " + dir_ + "/registry show fashion_cnn_dp --json");
  ASSERT_EQ(card.exit_code, 0) << card.output;
  const auto c = nlohmann::json::parse(card.output.substr(card.output.find('{')));
  EXPECT_EQ(c["class_names"][7], "Sneaker");
  EXPECT_EQ(c["privacy"]["steps"], 2);
  EXPECT_EQ(c["privacy"]["accountant"], "rdp");
  EXPECT_EQ(c["training_data"]["format"], "IDX");
  EXPECT_EQ(c["training_data"]["files"].size(), 4u);
}

TEST_F(TrainIntegration, BadJobIsRefusedBeforeAnyWork) {
  std::string job = dir_ + "/bad.pbtxt";
  std::string text = *ReadFile(kSrc + "/jobs/fashion_cnn.pbtxt");
  text.replace(text.find("units: 10"), 9, "units: 12");
  text.replace(text.find("expect_parameters"), 24, "");
  std::ofstream(job) << text;
  ShellRun r = Shell("POLIS_BUILD_DIR=" + kBin + " " + kSrc + "/launch/polis-run --workers 2 --servers 1 " +
                "--registry " + dir_ + "/registry --run-dir " + dir_ + "/run " + job);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("num_classes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bad.pbtxt"), std::string::npos) << r.output;
  EXPECT_FALSE(PathExists(dir_ + "/registry/fashion_cnn"));
}

TEST_F(TrainIntegration, DryRunPrintsTheMpirunCommand) {
  ShellRun r = Shell("POLIS_BUILD_DIR=" + kBin + " " + kSrc + "/launch/polis-run --workers 2 --servers 1 --dry-run " +
                kSrc + "/jobs/fashion_cnn.pbtxt");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("-np 4"), std::string::npos) << r.output;
  // Waiting OpenMP threads sleep on every rank (docs/env.md).
  EXPECT_NE(r.output.find("-x OMP_WAIT_POLICY"), std::string::npos) << r.output;
}

TEST_F(TrainIntegration, TooFewRanksIsAClearError) {
  ShellRun r = Shell("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_oob_tcp_if_include=lo "
                     "mpirun -np 2 --oversubscribe --bind-to none --mca btl self,vader " + kBin +
                     "/launch/polis-train --servers 1 --registry " + dir_ + "/registry " + kSrc +
                     "/jobs/fashion_cnn.pbtxt");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("at least 3 ranks"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace polis
