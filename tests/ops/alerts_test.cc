// The shipped alerting rules against a real job, and the coordinator's
// periodic stall warning (docs/operations.md, "Alerts"):
//  - every series an alert's expression uses is on a real coordinator's
//    /metrics, and the labels the alert shows (by/on/group_left lists and
//    $labels.* in its annotations) come from those series, so the rules
//    cannot drift from the code (the registry's series are checked in
//    tests/registry/server_test.cc);
//  - a worker slowed to 3 s per step makes the coordinator log a
//    "stall:" line every POLIS_STALL_WARN_S naming it as the rank the job
//    waits on, and the job still finishes.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/ops/ops_test_util.h"
#include "tests/ops/prometheus_parse.h"
#include "tests/prereq.h"

namespace polis::coordinator {
namespace {

using namespace ops_test;

bool HaveFashionMnist() { return PathExists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

std::string PolisRun(const std::string& env, const std::string& args) {
  return env + " POLIS_NO_BUILD=1 POLIS_BUILD_DIR=" + kBin + " " + kSrc + "/launch/polis-run " + args;
}

// One alert of the rules file: the metric names its expression uses and the
// labels it shows (by/on/group_left lists, $labels.* in annotations),
// Prometheus's own target labels left out.
struct Rule {
  std::string alert;
  std::set<std::string> metrics, labels;
};

std::vector<Rule> ReadRules(const std::string& path) {
  std::vector<Rule> rules;
  std::istringstream in(ReadOrEmpty(path));
  std::string line;
  bool in_expr = false;
  const std::regex alert_re(R"(^\s*- alert:\s*(\w+))"), name_re(R"(\b(polis_\w+))"),
      list_re(R"(\b(?:by|on|group_left)\s*\(([^)]*)\))"), label_re(R"(\$labels\.(\w+))"), word_re(R"(\w+)");
  std::string expr;
  auto finish_expr = [&] {
    if (rules.empty()) return;
    for (std::sregex_iterator it(expr.begin(), expr.end(), name_re), end; it != end; ++it)
      rules.back().metrics.insert((*it)[1]);
    for (std::sregex_iterator it(expr.begin(), expr.end(), list_re), end; it != end; ++it) {
      const std::string list = (*it)[1];
      for (std::sregex_iterator w(list.begin(), list.end(), word_re); w != std::sregex_iterator(); ++w)
        rules.back().labels.insert((*w)[0]);
    }
    expr.clear();
  };
  while (std::getline(in, line)) {
    const std::string code = line.substr(0, line.find('#'));
    std::smatch m;
    if (std::regex_search(line, m, alert_re)) {
      finish_expr();
      in_expr = false;
      rules.push_back({m[1], {}, {}});
      continue;
    }
    if (rules.empty()) continue;
    if (code.find("expr:") != std::string::npos) in_expr = true;
    else if (code.find("for:") != std::string::npos || code.find("labels:") != std::string::npos) {
      if (in_expr) finish_expr();
      in_expr = false;
    }
    if (in_expr) expr += code + "\n";
    for (std::sregex_iterator it(line.begin(), line.end(), label_re), end; it != end; ++it)
      rules.back().labels.insert((*it)[1]);
  }
  finish_expr();
  for (auto& r : rules)
    for (const char* target : {"job", "instance", "le"}) r.labels.erase(target);
  return rules;
}

// metric name -> the label names its samples carry.
std::map<std::string, std::set<std::string>> LabelsByMetric(const std::string& text) {
  std::map<std::string, std::set<std::string>> out;
  const std::regex label_re(R"re((\w+)="(?:[^"\\]|\\.)*")re");
  for (const auto& [key, value] : ParseExposition(text).samples) {
    const size_t brace = key.find('{');
    auto& labels = out[key.substr(0, brace)];
    if (brace == std::string::npos) continue;
    const std::string body = key.substr(brace);
    for (std::sregex_iterator it(body.begin(), body.end(), label_re), end; it != end; ++it) labels.insert((*it)[1]);
  }
  return out;
}

TEST(Alerts, RealMetricsHaveEverySeriesAndLabelTheRulesUse) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  const std::vector<Rule> rules = ReadRules(kSrc + "/launch/prometheus/polis-alerts.yml");
  ASSERT_GE(rules.size(), 6u);
  std::set<std::string> wanted;
  for (const auto& r : rules)
    for (const auto& m : r.metrics)
      if (!m.starts_with("polis_inference_")) wanted.insert(m);  // not the registry's
  ASSERT_FALSE(wanted.empty());

  TempDir dir;
  const std::string run = dir.path() + "/run";
  ShellRun job;
  std::atomic<bool> ended{false};
  // A parameter-server job (so server series exist) with a slowed worker, so
  // it runs long enough to be scraped while it trains.
  std::thread t([&] {
    job = Shell(PolisRun("POLIS_TEST_SLOW_WORKER=1:60",
                         "--workers 2 --servers 1 --epochs 1 --registry " + dir.path() + "/registry --run-dir " + run +
                             " " + kSrc + "/jobs/fashion_cnn.pbtxt -- --train-limit 4000 --test-limit 200"));
    ended = true;
  });
  std::map<std::string, std::set<std::string>> best;
  std::string best_text;
  for (int i = 0; i < 600 && best.size() < wanted.size() && !ended; ++i) {  // up to ~60 s
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const json info = json::parse(ReadOrEmpty(run + "/coordinator.json"), nullptr, false);
    if (info.is_discarded() || info.value("address", "").empty()) continue;
    auto r = Get(PortOf(info.value("address", "")), "/metrics");
    if (r.status != 200) continue;
    auto labels = LabelsByMetric(r.body);
    std::map<std::string, std::set<std::string>> found;
    for (const auto& name : wanted)
      if (labels.count(name)) found[name] = labels[name];
    if (found.size() > best.size()) best = found, best_text = r.body;
  }
  t.join();
  ASSERT_EQ(job.exit_code, 0) << job.output << job.errors;
  for (const auto& name : wanted) EXPECT_TRUE(best.count(name)) << name << " is not on /metrics:\n" << best_text;
  for (const auto& r : rules) {
    auto registry_series = [](const std::string& m) { return m.starts_with("polis_inference_"); };
    if (std::all_of(r.metrics.begin(), r.metrics.end(), registry_series)) continue;
    std::set<std::string> have;
    for (const auto& m : r.metrics)
      if (best.count(m)) have.insert(best[m].begin(), best[m].end());
    for (const auto& l : r.labels)
      EXPECT_TRUE(have.count(l)) << r.alert << " shows label '" << l << "', which none of its series carries";
  }
}

TEST(Alerts, StallWarningNamesTheSlowWorker) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  TempDir dir;
  // All-reduce, 2 workers, shards of one batch (so both get data): worker
  // index 1 (rank 2) sleeps 3 s a step, so no step completes for longer
  // than the 1 s warning interval.
  std::string spec = ReadOrEmpty(kSrc + "/jobs/fashion_cnn_allreduce.pbtxt");
  const std::string training = "training { batch_size: 32 ";
  ASSERT_NE(spec.find(training), std::string::npos) << "the job's training line changed";
  spec.replace(spec.find(training), training.size(), training + "shard_size: 32 ");
  const std::string job_file = dir.path() + "/job.pbtxt";
  ASSERT_TRUE(WriteFileAtomic(job_file, spec).ok());
  ShellRun job = Shell(PolisRun("POLIS_TEST_SLOW_WORKER=1:3000 POLIS_STALL_WARN_S=1",
                                "--workers 2 --epochs 1 --registry " + dir.path() + "/registry --run-dir " +
                                    dir.path() + "/run " + job_file + " -- --train-limit 256 --test-limit 100"));
  ASSERT_EQ(job.exit_code, 0) << job.output << job.errors;
  const std::string log = job.output + job.errors;
  std::istringstream in(log);
  std::string line;
  int warnings = 0, naming = 0;
  while (std::getline(in, line)) {
    if (line.find("stall: no worker has completed a step for") == std::string::npos) continue;
    ++warnings;
    // Once both have reported, rank 2 (mostly computing: its sleep) is the
    // one waited on; rank 1 (mostly communicating) is held.
    const size_t waiting = line.find("waiting on rank 2 (worker)"), held = line.find("held: rank 1 (worker)");
    if (waiting != std::string::npos && held != std::string::npos && waiting < held &&
        line.find("mostly computing", waiting) < held)
      ++naming;
  }
  EXPECT_GE(warnings, 2) << log;
  EXPECT_GE(naming, 1) << log;
}

}  // namespace
}  // namespace polis::coordinator
