// ONNX export checked by other runtimes: a model trained here (a small
// Fashion-MNIST run), exported to model.onnx, must pass onnx.checker
// (full_check) from Debian's python3-onnx, and OpenCV's DNN module
// (python3-opencv) must give the same class probabilities as Polis's own
// serving code to 1e-4 on all 10000 test images (registry/tools/check_onnx.py).
#include <gtest/gtest.h>
#include "tests/prereq.h"

#include <iostream>

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "tests/integration/shell.h"

namespace polis {
namespace {

using namespace polis::it;

constexpr char kPython[] = "/usr/bin/python3";

TEST(OnnxOpenCv, FullTestSetMatchesPolisProbabilities) {
  if (!HaveFashionMnist())
    POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist); "
                    "launch/install-deps.sh installs it";
  ShellRun py = Shell(std::string(kPython) + " -c 'import numpy, onnx, onnx.checker, cv2'");
  if (py.exit_code != 0)
    POLIS_MISSING_PREREQ() << kPython << " lacks numpy, onnx or cv2 (Debian: python3-numpy python3-onnx "
                 << "python3-opencv; launch/install-deps.sh installs them): " << py.output;
  char tmpl[] = "/tmp/polis-onnx-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string reg = kBin + "/registry/polis-registry";
  const std::string root = dir + "/registry";

  // A model with real (trained) weights, quickly: one epoch on 3000 images.
  ShellRun train = Shell(PolisRun("--workers 1 --servers 0 --sync allreduce --epochs 1 --registry " + root +
                                  " --run-dir " + dir + "/run " + kSrc +
                                  "/jobs/fashion_cnn.pbtxt -- --train-limit 3000 --test-limit 500"));
  ASSERT_EQ(train.exit_code, 0) << train.output;

  ShellRun onnx = Shell(reg + " export-onnx --root " + root + " fashion_cnn");
  if (onnx.exit_code != 0 && onnx.output.find("without ONNX") != std::string::npos) {
    std::system(("rm -rf " + dir).c_str());
    POLIS_MISSING_PREREQ() << "polis-registry was built without libonnx-dev: " << onnx.output;
  }
  ASSERT_EQ(onnx.exit_code, 0) << onnx.output;
  const std::string onnx_path = root + "/fashion_cnn/1/model.onnx";
  ASSERT_TRUE(PathExists(onnx_path)) << onnx.output;

  const std::string images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  const std::string labels = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
  ShellRun predict = Shell(reg + " predict --root " + root + " fashion_cnn --idx-images " + images +
                           " --idx-labels " + labels + " --out " + dir + "/polis.bin");
  ASSERT_EQ(predict.exit_code, 0) << predict.output;
  auto summary = nlohmann::json::parse(predict.output, nullptr, false);
  ASSERT_TRUE(summary.is_object()) << predict.output;
  EXPECT_EQ(summary["images"], 10000);
  EXPECT_EQ(summary["output"], "probabilities");
  EXPECT_GT(summary["accuracy"].get<double>(), 0.6) << predict.output;

  ShellRun check = Shell(std::string(kPython) + " " + kSrc + "/registry/tools/check_onnx.py --onnx " +
                         onnx_path + " --images " + images + " --labels " + labels + " --polis-probs " +
                         dir + "/polis.bin --tolerance 1e-4");
  std::cout << "check_onnx: " << check.output << std::endl;
  ASSERT_EQ(check.exit_code, 0) << check.output;
  auto report = nlohmann::json::parse(check.output.substr(check.output.find('{')), nullptr, false);
  ASSERT_TRUE(report.is_object()) << check.output;
  EXPECT_EQ(report["images"], 10000);
  EXPECT_EQ(report["outputs"], 10);
  EXPECT_LE(report["max_abs_diff"].get<double>(), 1e-4);
  EXPECT_EQ(report["accuracy_opencv"], report["accuracy_polis"]);
  EXPECT_NEAR(report["accuracy_polis"].get<double>(), summary["accuracy"].get<double>(), 1e-12);

  // The checker refuses a broken file with a reason and exit 1 or 2.
  std::system(("head -c 1000 " + onnx_path + " > " + dir + "/cut.onnx").c_str());
  ShellRun bad = Shell(std::string(kPython) + " " + kSrc + "/registry/tools/check_onnx.py --onnx " + dir +
                       "/cut.onnx --images " + images + " --polis-probs " + dir + "/polis.bin");
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("cut.onnx"), std::string::npos) << bad.output;
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace polis
