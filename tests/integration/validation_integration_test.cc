// Integration: validation split, early stopping, restore_best, gradient
// clipping and the final test evaluation, with real MPI processes on a
// Fashion-MNIST subset (3000 training images, 10 % held out; 1000 test).
#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

#include "tests/integration/shell.h"

namespace polis {
namespace {

using namespace polis::it;
using json = nlohmann::json;

class ValidationIntegration : public FashionJobTest {
 protected:
  // The seed job (parameter servers or all-reduce) with `dataset` and
  // `training` settings added, run on the subset; returns result.json.
  json Run(const std::string& base, const std::string& dataset, const std::string& training,
           const std::string& launch, std::vector<std::pair<std::string, std::string>> edits = {}) {
    edits.push_back({"num_classes: 10", "num_classes: 10 " + dataset});
    edits.push_back({"training { batch_size: 32 epochs: 5 seed: 42 }",
                     "training { batch_size: 32 epochs: 4 seed: 42 " + training + " }"});
    const std::string job = JobVariant(dir_, "job.pbtxt", edits, base);
    ShellRun r = Shell(PolisRun(launch + " --registry " + dir_ + "/registry --run-dir " + dir_ + "/run " + job +
                                " -- --train-limit 3000 --test-limit 1000"));
    output_ = r.output;
    EXPECT_EQ(r.exit_code, 0) << r.output;
    job_ = job;
    return ReadJson(dir_ + "/run/result.json");
  }

  // The final test evaluation: a 10x10 confusion matrix over every test
  // sample, whose diagonal gives the accuracy; and the published artifact,
  // evaluated on its own, gives the same accuracy.
  void ExpectFinalEvaluation(const json& result) {
    ASSERT_TRUE(result.contains("confusion_matrix")) << result.dump();
    EXPECT_EQ(result["test_samples"], 1000);
    int64_t total = 0, diagonal = 0;
    ASSERT_EQ(result["confusion_matrix"].size(), 10u);
    for (size_t c = 0; c < 10; ++c) {
      ASSERT_EQ(result["confusion_matrix"][c].size(), 10u);
      for (size_t p = 0; p < 10; ++p) total += result["confusion_matrix"][c][p].get<int64_t>();
      diagonal += result["confusion_matrix"][c][c].get<int64_t>();
    }
    EXPECT_EQ(total, 1000);
    EXPECT_DOUBLE_EQ(result["test_accuracy"].get<double>(), diagonal / 1000.0);
    EXPECT_EQ(result["per_class_accuracy"].size(), 10u);
    EXPECT_EQ(result["reloaded_test_accuracy"], result["test_accuracy"]);
    ShellRun ev = Shell(kBin + "/launch/polis-train --evaluate " + result["artifact"].get<std::string>() +
                        " --test-limit 1000 " + job_);
    ASSERT_EQ(ev.exit_code, 0) << ev.output;
    auto evj = json::parse(ev.output.substr(ev.output.find('{')));
    EXPECT_EQ(evj["test_accuracy"].get<double>(), result["test_accuracy"].get<double>());
  }

  // Early stopping that must stop after epoch 2 (no epoch can beat epoch 1's
  // validation accuracy by 0.5), publishing epoch 1 from its checkpoint.
  void ExpectStoppedAtTwoPublishingOne(const json& result) {
    EXPECT_EQ(result["state"], "done") << result.dump();
    EXPECT_EQ(result["selection"], "validation");
    EXPECT_TRUE(result["stopped_early"].get<bool>());
    EXPECT_EQ(result["best_epoch"], 1);
    EXPECT_EQ(result["published_epoch"], 1);
    EXPECT_EQ(result["epochs"], 2);
    EXPECT_EQ(result["epochs_planned"], 4);
    ASSERT_EQ(result["history"].size(), 2u);
    for (const auto& h : result["history"]) {
      EXPECT_EQ(h["train_samples"], 2700) << "the 300 validation samples are never trained on";
      EXPECT_EQ(h["val_samples"], 300);
      EXPECT_TRUE(h.contains("val_loss") && h.contains("val_accuracy")) << h.dump();
      EXPECT_FALSE(h.contains("test_accuracy")) << "the test set is not looked at per epoch";
    }
    EXPECT_NE(output_.find("val_acc"), std::string::npos) << output_;
    EXPECT_NE(output_.find("early stopping after epoch 2"), std::string::npos) << output_;
    // keep_checkpoints: 1 keeps the newest and spares the best epoch's.
    int ends = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/run/checkpoints"))
      ends += e.path().filename().string().find("-end") != std::string::npos;
    EXPECT_EQ(ends, 2);
    ExpectFinalEvaluation(result);
  }

  std::string output_, job_;
};

constexpr char kStopAtTwo[] =
    "keep_checkpoints: 1 restore_best: true clip_grad_norm: 1.0 "
    "early_stopping { metric: \"val_accuracy\" mode: MAX patience: 1 min_delta: 0.5 }";

TEST_F(ValidationIntegration, ParameterServersStopEarlyAndPublishTheBestEpoch) {
  const json result = Run("fashion_cnn.pbtxt", "validation_fraction: 0.1", kStopAtTwo, "--workers 2 --servers 2");
  ExpectStoppedAtTwoPublishingOne(result);
}

TEST_F(ValidationIntegration, AllReduceStopsEarlyAndPublishesTheBestEpoch) {
  const json result = Run("fashion_cnn_allreduce.pbtxt", "validation_size: 300", kStopAtTwo, "--workers 2");
  ExpectStoppedAtTwoPublishingOne(result);
  for (const auto& h : result["history"]) EXPECT_TRUE(h["replicas_identical"].get<bool>());
}

// Without a validation split epochs are judged on the test set, and the
// result says so; the final evaluation is still the published model's.
TEST_F(ValidationIntegration, WithoutAValidationSplitSelectionIsTest) {
  const json result = Run("fashion_cnn.pbtxt", "", "", "--workers 2 --servers 1 --epochs 2");
  EXPECT_EQ(result["selection"], "test") << result.dump();
  EXPECT_FALSE(result["stopped_early"].get<bool>());
  EXPECT_EQ(result["published_epoch"], 2);
  for (const auto& h : result["history"]) {
    EXPECT_EQ(h["train_samples"], 3000);
    EXPECT_TRUE(h.contains("test_accuracy"));
    EXPECT_FALSE(h.contains("val_accuracy"));
  }
  // The last epoch's test figure is the published model's.
  EXPECT_EQ(result["history"][1]["test_accuracy"], result["test_accuracy"]);
  ExpectFinalEvaluation(result);
}

// ASP/SSP clip each push by the norm its worker sends with it.
TEST_F(ValidationIntegration, SspJobWithClipGradNormTrains) {
  const json result = Run("fashion_cnn.pbtxt", "validation_fraction: 0.1", "clip_grad_norm: 0.5",
                          "--workers 2 --servers 2 --epochs 1", {{"consistency: BSP", "consistency: SSP staleness: 1"}});
  EXPECT_EQ(result["state"], "done") << output_;
  EXPECT_GT(result["test_accuracy"].get<double>(), 0.5) << result.dump();
}

}  // namespace
}  // namespace polis
