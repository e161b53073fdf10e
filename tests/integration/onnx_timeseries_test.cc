// ONNX export of the city forecasters: tiny LSTM, GRU and Transformer jobs
// trained for one epoch on the UCI bike-sharing data with polis-run,
// published, exported; registry/tools/check_onnx.py (onnx.checker
// full_check, then its reference evaluator of the ONNX operators) must give
// Polis's own predictions to 1e-4 on every test window, and
// preprocessing.json applied to the raw CSV rows must rebuild the windows
// Polis cut.
#include <gtest/gtest.h>
#include "tests/prereq.h"

#include <fstream>
#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/data/dataset.h"
#include "common/fs.h"
#include "tests/integration/shell.h"

namespace polis {
namespace {

using namespace polis::it;

constexpr char kPython[] = "/usr/bin/python3";
const std::string kHourCsv = kSrc + "/../shared/data/bike-sharing/hour.csv";

class OnnxTimeSeries : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(kHourCsv))
      POLIS_MISSING_PREREQ() << "the UCI bike-sharing data is not at " << kHourCsv << " (it ships in shared/data)";
    ShellRun py = Shell(std::string(kPython) + " -c 'import numpy, onnx, onnx.checker'");
    if (py.exit_code != 0)
      POLIS_MISSING_PREREQ() << kPython << " lacks numpy or onnx (Debian: python3-numpy python3-onnx; "
                             << "launch/install-deps.sh installs them): " << py.output;
    char tmpl[] = "/tmp/polis-onnx-ts-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }

  // Trains `base` with `edits` (smaller: 24-step windows, a few hundred
  // training windows, one epoch), exports it and checks every test window.
  void TrainExportCheck(const std::string& base, const std::string& model,
                        std::vector<std::pair<std::string, std::string>> edits, const char* op,
                        const std::string& csv = kHourCsv) {
    edits.push_back({"lookback: 168", "lookback: 24"});
    edits.push_back({"units: 32", "units: 4"});
    const std::string job = JobVariant(dir_, "job.pbtxt", edits, base);
    const std::string root = dir_ + "/registry";
    const std::string reg = kBin + "/registry/polis-registry";
    ShellRun train = Shell(PolisRun("--workers 1 --servers 0 --sync allreduce --epochs 1 --registry " + root +
                                    " --run-dir " + dir_ + "/run " + job + " -- --train-limit 400 --test-limit 100 " +
                                    "--csv " + csv));
    ASSERT_EQ(train.exit_code, 0) << train.output;
    // A forecaster's signature in words, written by Polis from the data.
    auto artifact = ReadArtifactFile(root + "/" + model + "/1/" + kArtifactFileName);
    ASSERT_TRUE(artifact.ok()) << artifact.status().ToString();
    const proto::ArtifactHeader& h = artifact->header;
    EXPECT_EQ(h.class_names_size(), 0);
    EXPECT_EQ(h.input_description().rfind("24 steps x ", 0), 0u) << h.input_description();
    EXPECT_NE(h.input_description().find(" features ("), std::string::npos) << h.input_description();
    EXPECT_NE(h.input_description().find("temp, atemp, hum"), std::string::npos) << h.input_description();
    EXPECT_NE(h.input_description().find("standardised as in preprocessing"), std::string::npos);
    EXPECT_EQ(h.output_description(), "next 1 value of cnt");
    EXPECT_EQ(h.test_samples(), 100);
    // What the reader did to hour.csv (its gaps, forward-filled), printed at
    // the start, in result.json and in the artifact for the model card.
    EXPECT_NE(train.output.find("polis: data: time series '" + csv + "'"), std::string::npos) << train.output;
    EXPECT_NE(train.output.find("polis: data:   gaps in time: "), std::string::npos) << train.output;
    EXPECT_NE(h.data_report().find("steps forward-filled"), std::string::npos) << h.data_report();
    auto result_text = ReadFile(dir_ + "/run/result.json");
    ASSERT_TRUE(result_text.ok()) << result_text.status().ToString();
    auto result = nlohmann::json::parse(*result_text, nullptr, false);
    ASSERT_TRUE(result.is_object()) << *result_text;
    EXPECT_EQ(result["data_report"], nlohmann::json(data::ReportLines(h.data_report())));
    // The naive references beside the model's error, on its 100 test windows.
    std::map<std::string, double> metrics;
    for (const auto& m : h.metric()) metrics[m.name()] = m.value();
    for (const char* n : {"seasonal_naive_mae", "last_value_mae"}) {
      ASSERT_TRUE(metrics.count(n)) << n;
      EXPECT_DOUBLE_EQ(metrics[n], result[n].get<double>()) << n;
    }

    ShellRun onnx = Shell(reg + " export-onnx --root " + root + " " + model);
    if (onnx.exit_code != 0 && onnx.output.find("without ONNX") != std::string::npos)
      POLIS_MISSING_PREREQ() << "polis-registry was built without libonnx-dev: " << onnx.output;
    ASSERT_EQ(onnx.exit_code, 0) << onnx.output;
    const std::string vdir = root + "/" + model + "/1";
    ASSERT_TRUE(PathExists(vdir + "/model.onnx")) << onnx.output;
    ASSERT_TRUE(PathExists(vdir + "/preprocessing.json")) << onnx.output;
    EXPECT_NE(ReadFile(vdir + "/model.onnx")->find(op), std::string::npos) << "no " << op << " operator";

    ShellRun predict = Shell(reg + " predict --root " + root + " " + model + " --csv " + csv + " --out " +
                             dir_ + "/polis.f32 --windows-out " + dir_ + "/windows.f32 --times-out " + dir_ +
                             "/times.txt");
    ASSERT_EQ(predict.exit_code, 0) << predict.output;
    auto summary = nlohmann::json::parse(predict.output, nullptr, false);
    ASSERT_TRUE(summary.is_object()) << predict.output;
    const int64_t windows = summary["windows"].get<int64_t>();
    EXPECT_GT(windows, 2000) << predict.output;  // the last three months, hourly
    EXPECT_EQ(summary["split"], "test");

    ShellRun check = Shell(std::string(kPython) + " " + kSrc + "/registry/tools/check_onnx.py --onnx " + vdir +
                           "/model.onnx --windows " + dir_ + "/windows.f32 --polis-outputs " + dir_ +
                           "/polis.f32 --csv " + csv + " --times " + dir_ + "/times.txt --tolerance 1e-4");
    std::cout << "check_onnx (" << model << "): " << check.output << std::endl;
    ASSERT_EQ(check.exit_code, 0) << check.output;
    auto report = nlohmann::json::parse(check.output.substr(check.output.find('{')), nullptr, false);
    ASSERT_TRUE(report.is_object()) << check.output;
    EXPECT_EQ(report["windows"], windows);
    EXPECT_EQ(report["outputs"], 1);
    EXPECT_LE(report["max_abs_diff"].get<double>(), 1e-4);
    EXPECT_GT(report["preprocessing"]["windows_compared"].get<int64_t>(), windows / 2);
    EXPECT_LE(report["preprocessing"]["max_abs_diff"].get<double>(), 1e-4);

    // A window file cut short is refused with the file's name.
    std::system(("head -c 1000 " + dir_ + "/windows.f32 > " + dir_ + "/cut.f32").c_str());
    ShellRun bad = Shell(std::string(kPython) + " " + kSrc + "/registry/tools/check_onnx.py --onnx " + vdir +
                         "/model.onnx --windows " + dir_ + "/cut.f32 --polis-outputs " + dir_ + "/polis.f32");
    EXPECT_EQ(bad.exit_code, 2) << bad.output;
    EXPECT_NE(bad.output.find("cut.f32"), std::string::npos) << bad.output;
  }

  std::string dir_;
};

TEST_F(OnnxTimeSeries, LstmMatchesPolisOnTestWindows) {
  TrainExportCheck("bike_demand_lstm.pbtxt", "bike_demand_lstm", {{"hidden_size: 64", "hidden_size: 8"}}, "LSTM");
}

TEST_F(OnnxTimeSeries, GruMatchesPolisOnTestWindows) {
  TrainExportCheck("bike_demand_lstm.pbtxt", "bike_demand_lstm",
                   {{"type: \"LSTM\"", "type: \"GRU\""}, {"hidden_size: 64", "hidden_size: 8"}}, "GRU");
}

// Rows the job's policies mend, in the test months of a copy of hour.csv:
// two timestamps repeated with other counts (KEEP_LAST), a malformed line
// (DROP) and an empty temperature (forward-filled). preprocessing.json
// names the policies, and check_onnx.py rebuilds the windows it can from
// the raw rows the same way (it fails if it keeps the first duplicate).
TEST_F(OnnxTimeSeries, StackedGruOnRowsThePoliciesMendMatchesPolis) {
  std::ifstream in(kHourCsv);
  std::ofstream out(dir_ + "/mended.csv");
  std::string line;
  for (int i = 0; std::getline(in, line); ++i) {
    if (i == 16900) {  // an empty temp (column 11)
      size_t at = 0;
      for (int c = 0; c < 10; ++c) at = line.find(',', at) + 1;
      line.erase(at, line.find(',', at) - at);
    }
    out << line << "\n";
    if (i == 16500 || i == 17000) {  // the same hour again, 7 more bikes
      const size_t cnt = line.rfind(',') + 1;
      out << line.substr(0, cnt) << std::stoi(line.substr(cnt)) + 7 << "\n";
    }
    if (i == 16800) out << "not,a,row\n";
  }
  out.close();
  TrainExportCheck("bike_demand_lstm.pbtxt", "bike_demand_lstm",
                   {{"type: \"LSTM\"", "type: \"GRU\""}, {"hidden_size: 64 num_layers: 1", "hidden_size: 6 num_layers: 2"},
                    {"duplicate_policy: FAIL", "duplicate_policy: KEEP_LAST"},
                    {"malformed_policy: FAIL", "malformed_policy: DROP"}},
                   "GRU", dir_ + "/mended.csv");
  auto result = ReadFile(dir_ + "/run/result.json");
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_NE(result->find("duplicate timestamps: 2 (kept the last)"), std::string::npos) << *result;
  EXPECT_NE(result->find("malformed rows: 1 (dropped)"), std::string::npos) << *result;
  EXPECT_NE(result->find("column 'temp' has no value"), std::string::npos) << *result;
}

TEST_F(OnnxTimeSeries, TransformerMatchesPolisOnTestWindows) {
  TrainExportCheck("bike_demand_transformer.pbtxt", "bike_demand_transformer", {{"ff_dim: 64", "ff_dim: 16"}},
                   "Erf");
}

}  // namespace
}  // namespace polis
