// A study state as polis-tune keeps it mid-study (launch/tune/study_state.h),
// for the study server, polisctl tune and study page tests: an ASHA study
// (rungs at 1, 3, 9 epochs) of six trials in every state, trial 0001 the
// best, trial 0002 running with a coordinator.json naming this process.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "launch/tune/study_state.h"

namespace polis::ops_test {

inline tune::Trial SampleTrial(const std::string& dir, int index, const std::string& state, int rung,
                               std::vector<double> values) {
  tune::Trial t;
  t.index = index;
  t.id = fmt::format("{:04d}", index);
  t.params = {{"optimizer.learning_rate", 0.001 * (index + 1)}, {"training.batch_size", 32 << (index % 2)}};
  t.state = state;
  t.rung = rung;
  for (size_t e = 0; e < values.size(); ++e) t.curve.emplace_back(static_cast<int>(e) + 1, values[e]);
  t.epochs_done = static_cast<int>(values.size());
  t.target_epochs = t.epochs_done;
  t.run_dir = dir + "/trials/" + t.id;
  t.started_at = "2026-12-05T07:00:00Z";
  return t;
}

inline tune::StudyState SampleStudy(const std::string& dir) {
  tune::StudyState s;
  s.name = "fashion_cnn_asha";
  s.study_dir = dir;
  s.objective = "val_accuracy";
  s.maximize = true;
  s.sampler = "RANDOM";
  s.scheduler = "ASHA (eta 3, grace 1 epoch(s), max 9)";
  s.rungs = {1, 3, 9};
  s.max_epochs = 9;
  s.wall_seconds = 754;
  s.trials.push_back(SampleTrial(dir, 0, "stopped", 0, {0.61}));
  s.trials.push_back(SampleTrial(dir, 1, "completed", 2, {0.70, 0.76, 0.79, 0.81, 0.83, 0.84, 0.85, 0.86, 0.88}));
  s.trials.push_back(SampleTrial(dir, 2, "running", 1, {0.68, 0.73}));
  s.trials[2].target_epochs = 3;
  s.trials.push_back(SampleTrial(dir, 3, "failed", 0, {0.30}));
  s.trials[3].error = "polis-run exited 1: worker 1 ran out of memory";
  s.trials.push_back(SampleTrial(dir, 4, "stopped", 1, {0.66, 0.71, 0.74}));
  s.trials.push_back(SampleTrial(dir, 5, "paused", 0, {0.69}));
  for (auto& t : s.trials) t.rung_values.assign(t.rung + 1, t.curve.back().second);
  return s;
}

// The coordinator.json of a running trial whose coordinator is this process.
inline void WriteTrialCoordinator(const std::string& run_dir, const std::string& address) {
  ASSERT_TRUE(MakeDirectories(run_dir).ok()) << run_dir;
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  nlohmann::json info = {{"pid", getpid()}, {"host", host}, {"address", address}, {"run_dir", run_dir}};
  std::ofstream(run_dir + "/coordinator.json") << info.dump(2);
}

}  // namespace polis::ops_test
