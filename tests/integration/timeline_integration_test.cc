// The timeline of a real 2-worker job (docs/timeline.md), in all-reduce and
// parameter-server mode: polis-run --timeline FILE under mpirun, then the
// file is parsed and checked:
//  - it is trace-event JSON (nlohmann::json reads it) and names every rank;
//  - per thread, every span lies inside its parent;
//  - each step holds its phases: forward and backward with one span per
//    layer, the loss, the sync; all-reduce buckets on the communication
//    thread carry every gradient byte once per step; pushes, server
//    applies and checkpoints are there;
//  - step durations add up: per worker, the step's phases cover at least
//    kCoverage of its steps' time, and the steps' time summed over workers
//    is within kStepTolerance of what the workers measured themselves
//    (metrics.jsonl: worker_compute_seconds + worker_comm_seconds, taken
//    with their own clock reads around the same interval).
// No timing is asserted: both sides time the same work.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "common/fs.h"
#include "tests/integration/shell.h"
#include "tests/prereq.h"
#include "tests/trace_check.h"

namespace polis {
namespace {

using namespace polis::it;
using nlohmann::json;

// The seed CNN: 8 layers, 93,322 parameters; all-reduce adds 2 floats
// (worker/gradient_sync.h, kGradientExtraSlots).
constexpr int kLayers = 8;
constexpr int64_t kGradientBytes = (93322 + 2) * 4;
// The phases a step's direct children must cover, summed over a worker's
// steps: what is left is bookkeeping between them (picking the batch's
// indices, a step without data zeroing its gradients).
constexpr double kCoverage = 0.90;
// Steps in the timeline against the workers' own measure of the same
// intervals: 5 %, or 20 ms for the whole job, whichever is larger.
constexpr double kStepTolerance = 0.05;
constexpr double kStepToleranceFloorUs = 20'000;

class TimelineIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveFashionMnist())
      POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist); "
                                "launch/install-deps.sh installs it";
    char tmpl[] = "/tmp/polis-tl-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }

  // Runs the job with --timeline and returns the parsed file.
  json Run(const std::string& job, const std::string& mode_args, int ranks) {
    const std::string timeline = dir_ + "/timeline.json";
    ShellRun r = Shell(PolisRun("--workers 2 " + mode_args + " --epochs 2 --timeline " + timeline + " --registry " +
                                dir_ + "/registry --run-dir " + dir_ + "/run " + job +
                                " -- --train-limit 2400 --test-limit 400"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    json doc = ReadJson(timeline);
    EXPECT_TRUE(doc.is_object()) << "the timeline does not parse: " << timeline;
    if (!doc.is_object()) return doc;
    EXPECT_EQ(doc["otherData"]["ranks"], ranks);
    EXPECT_TRUE(doc["otherData"]["truncated_ranks"].empty());
    // Every rank is a labelled process: "rank 2 (worker)".
    std::map<int, std::string> names;
    for (const auto& e : doc["traceEvents"])
      if (e["name"] == "process_name") names[e["pid"]] = e["args"]["name"];
    EXPECT_EQ(static_cast<int>(names.size()), ranks);
    for (int r = 0; r < ranks; ++r)
      EXPECT_EQ(names[r].rfind("rank " + std::to_string(r) + " (", 0), 0u) << names[r];
    std::string why;
    EXPECT_TRUE(test::SpansNest(doc, &why)) << why;
    return doc;
  }

  // What the workers measured: compute + communication, summed over epochs.
  double MeasuredStepMicros() {
    auto text = ReadFile(dir_ + "/run/metrics.jsonl");
    EXPECT_TRUE(text.ok());
    double s = 0;
    std::istringstream in(text.ok() ? *text : "");
    for (std::string line; std::getline(in, line);) {
      json row = json::parse(line, nullptr, false);
      if (row.is_object() && row.contains("worker_compute_seconds"))
        s += row["worker_compute_seconds"].get<double>() + row["worker_comm_seconds"].get<double>();
    }
    return s * 1e6;
  }

  // The checks every mode shares; returns the spans.
  std::vector<test::Span> CheckSteps(const json& doc, const std::set<int>& workers) {
    const auto tree = test::SpanTree(doc);
    std::map<int, double> step_us, covered_us;
    std::map<int, int> steps;
    std::map<int, std::vector<int>> children;  // by parent index
    for (int i = 0; i < static_cast<int>(tree.size()); ++i)
      if (tree[i].parent >= 0) children[tree[i].parent].push_back(i);
    for (int i = 0; i < static_cast<int>(tree.size()); ++i) {
      const test::Span& s = tree[i];
      if (s.name != "step") continue;
      EXPECT_TRUE(workers.count(s.pid)) << "a step on rank " << s.pid;
      EXPECT_EQ(s.parent, -1) << "steps are top-level spans";
      ++steps[s.pid];
      step_us[s.pid] += s.dur;
      std::map<std::string, int> kinds;
      for (int c : children[i]) {
        covered_us[s.pid] += tree[c].dur;
        ++kinds[tree[c].name];
        if (tree[c].name == "forward" || tree[c].name == "backward") {
          // One span per layer, in order (backward: last layer first);
          // beside them, waits for parameter pieces before a layer.
          std::vector<int64_t> layers;
          for (int l : children[c])
            if (tree[l].name != "pull wait" && tree[l].args.contains("layer")) layers.push_back(tree[l].args["layer"]);
          EXPECT_EQ(static_cast<int>(layers.size()), kLayers) << tree[c].name << " of a step on rank " << s.pid;
          if (static_cast<int>(layers.size()) != kLayers) continue;
          for (int k = 0; k < kLayers; ++k)
            EXPECT_EQ(layers[k], tree[c].name == "forward" ? k : kLayers - 1 - k);
        }
      }
      EXPECT_EQ(kinds["sync"], 1) << "step " << s.args.dump() << " on rank " << s.pid;
      // A step with data: its batch, forward, loss and backward.
      if (kinds["forward"] > 0) {
        for (const char* phase : {"load batch", "loss", "backward", "check finite"}) {
          EXPECT_EQ(kinds[phase], 1) << phase << " in step " << s.args.dump() << " on rank " << s.pid;
        }
      }
    }
    double timeline_us = 0;
    for (int w : workers) {
      EXPECT_GT(steps[w], 10) << "rank " << w;
      EXPECT_GE(covered_us[w], kCoverage * step_us[w]) << "rank " << w << ": phases cover " << covered_us[w]
                                                        << " us of " << step_us[w] << " us of steps";
      EXPECT_LE(covered_us[w], step_us[w] + test::kEpsilonUs * steps[w]);
      timeline_us += step_us[w];
    }
    const double measured_us = MeasuredStepMicros();
    EXPECT_GT(measured_us, 0);
    EXPECT_NEAR(timeline_us, measured_us, std::max(kStepTolerance * measured_us, kStepToleranceFloorUs))
        << "the timeline's steps against the workers' own compute + comm seconds";
    return tree;
  }

  std::string dir_;
};

TEST_F(TimelineIntegration, AllReduceJob) {
  const std::string job = JobVariant(dir_, "ar.pbtxt", {{"epochs: 5", "epochs: 5 checkpoint_every_steps: 20"}},
                                     "fashion_cnn_allreduce.pbtxt");
  json doc = Run(job, "", 3);
  ASSERT_TRUE(doc.is_object());
  const auto tree = CheckSteps(doc, {1, 2});
  // Each worker's communication thread reduced every gradient byte once per
  // step; the optimizer ran inside the sync.
  std::map<int, int64_t> bucket_bytes;
  std::map<int, int> steps, optimizer, comm_rows;
  for (const auto& s : tree) {
    if (s.name == "allreduce bucket") {
      bucket_bytes[s.pid] += s.args["bytes"].get<int64_t>();
      EXPECT_EQ(s.parent, -1) << "buckets run on their own thread";
    }
    if (s.name == "step") ++steps[s.pid];
    if (s.name == "optimizer") {
      ++optimizer[s.pid];
      ASSERT_GE(s.parent, 0);
      EXPECT_EQ(tree[s.parent].name, "sync");
    }
  }
  for (const auto& e : doc["traceEvents"])
    if (e["name"] == "thread_name" && e["args"]["name"] == "comm") ++comm_rows[e["pid"]];
  for (int w : {1, 2}) {
    EXPECT_EQ(bucket_bytes[w], kGradientBytes * steps[w]) << "rank " << w;
    EXPECT_GT(optimizer[w], 10);
    EXPECT_EQ(comm_rows[w], 1);
  }
  // The lead worker sent checkpoints; the coordinator wrote them.
  std::map<std::pair<int, std::string>, int> where;
  for (const auto& s : tree) ++where[{s.pid, s.name}];
  EXPECT_GT((where[{1, "checkpoint"}]), 0);
  EXPECT_GT((where[{0, "checkpoint write"}]), 0);
}

TEST_F(TimelineIntegration, ParameterServerJob) {
  const std::string job = JobVariant(dir_, "ps.pbtxt", {{"epochs: 5", "epochs: 5 checkpoint_every_steps: 20"}});
  json doc = Run(job, "--servers 1", 4);
  ASSERT_TRUE(doc.is_object());
  const auto tree = CheckSteps(doc, {2, 3});
  std::map<std::pair<int, std::string>, int> where;
  for (const auto& s : tree) {
    ++where[{s.pid, s.name}];
    if (s.name == "push piece") {
      ASSERT_GE(s.parent, 0);
      EXPECT_EQ(tree[s.parent].name, "backward");
    }
  }
  for (int w : {2, 3}) {
    EXPECT_GT((where[{w, "push piece"}]), 10) << "rank " << w;
    EXPECT_GT((where[{w, "wait servers"}]), 10) << "rank " << w;
  }
  EXPECT_GT((where[{1, "server apply"}]), 10);
  EXPECT_GT((where[{1, "checkpoint"}]), 0);
  EXPECT_GT((where[{0, "checkpoint write"}]), 0);
}

}  // namespace
}  // namespace polis
