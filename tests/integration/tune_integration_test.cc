// polis-tune end to end (docs/tuning.md): a small ASHA study of real
// all-reduce jobs on a Fashion-MNIST subset, two trials at a time, killed
// with SIGKILL mid-study and resumed: finished trials are not repeated,
// trials cut short continue from their checkpoints, the promoted trial
// continues from its rung checkpoint, and the best model is published and
// aliased with the study in its lineage.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

#include "launch/tune/study_state.h"
#include "tests/integration/shell.h"

namespace polis::it {
namespace {

using json = nlohmann::json;

class TuneIntegration : public FashionJobTest {};

// A small MLP: the trials are short, so the study is about the scheduler.
std::string WriteBaseJob(const std::string& dir) {
  const std::string path = dir + "/mlp.pbtxt";
  std::ofstream(path) << R"(name: "tune_mlp"
model {
  layer { type: "Flatten" }
  layer { type: "Dense" activation: RELU dense_param { units: 32 } }
  layer { type: "Dense" dense_param { units: 10 } }
}
dataset { format: IDX dir: "fashion-mnist" train_limit: 2000 test_limit: 500 }
optimizer { type: ADAM learning_rate: 0.001 }
training { batch_size: 32 epochs: 3 seed: 5 }
sync { mode: ALLREDUCE servers: 0 }
registry { root: ")" << dir << R"(/registry" model_name: "tune_mlp" }
)";
  return path;
}

std::string WriteStudy(const std::string& dir) {
  const std::string path = dir + "/study.pbtxt";
  std::ofstream(path) << R"(name: "mlp_asha"
base_job: "mlp.pbtxt"
param { field: "optimizer.learning_rate" log_uniform { min: 1e-4 max: 3e-2 } }
param { field: "training.batch_size" choice { value: "32" value: "64" } }
sampler: RANDOM
seed: 3
scheduler { type: ASHA reduction_factor: 3 grace_period: 1 max_epochs: 3 }
objective { metric: "test_accuracy" direction: MAXIMIZE }
budget { max_trials: 4 }
workers: 1
)";
  return path;
}

// The last 4,000 characters of a file ("" when unreadable).
std::string Tail(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return "";
  return text->size() > 4000 ? text->substr(text->size() - 4000) : *text;
}

// Every log under a trial's run directory, for a failed trial's message.
std::string TrialLogs(const std::string& run_dir) {
  std::string out;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(run_dir, ec)) {
    if (e.is_regular_file() && e.path().extension() == ".log")
      out += "--- " + e.path().string() + "\n" + Tail(e.path().string()) + "\n";
  }
  return out;
}

int CountRows(const std::string& run_dir, int epoch) {
  auto text = ReadFile(run_dir + "/metrics.jsonl");
  if (!text.ok()) return 0;
  int n = 0;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    json row = json::parse(line, nullptr, false);
    if (row.is_object() && row.value("epoch", 0) == epoch) ++n;
  }
  return n;
}

TEST_F(TuneIntegration, AshaStudySurvivesSigkillAndPublishesItsBest) {
  WriteBaseJob(dir_);
  const std::string study = WriteStudy(dir_);
  const std::string sdir = dir_ + "/study";
  const std::string tune = "POLIS_BUILD_DIR=" + kBin + " " + kBin + "/launch/polis-tune";
  const auto t0 = std::chrono::steady_clock::now();
  ShellRun start = Shell(tune + " --parallel 2 --slots 4 --threads 1 --study-dir " + sdir + " " + study + " > " + dir_ +
                         "/tune1.log 2>&1 & echo $!");
  const int pid = std::atoi(start.output.c_str());
  ASSERT_GT(pid, 0) << start.output;

  // Kill it once a trial has finished its first rung and another is training.
  bool killed = false;
  std::set<std::string> finished_before;
  std::vector<long long> children;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(150)) {
    auto s = tune::ReadStudyState(sdir);
    if (s.ok()) {
      int finished = 0, running = 0;
      for (const auto& t : s->trials) {
        if (!t.rung_values.empty()) ++finished;
        if (t.state == "running" && t.pid > 0 && t.epochs_done == 0) ++running;
      }
      if (finished >= 1 && running >= 1) {
        for (const auto& t : s->trials) {
          if (!t.rung_values.empty() && t.state != "running") finished_before.insert(t.id);
          if (t.pid > 0) children.push_back(t.pid);
        }
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        killed = true;
        break;
      }
    }
    if (kill(pid, 0) != 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(killed) << "the study never had a finished and a running trial at once:\n"
                      << *ReadFile(dir_ + "/tune1.log");
  waitpid(pid, nullptr, 0);  // reaped by the shell's subshell, if not ours
  // Its polis-run children got SIGTERM (PR_SET_PDEATHSIG): they checkpoint and stop.
  for (long long c : children)
    for (int i = 0; i < 600 && kill(static_cast<pid_t>(c), 0) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto mid = tune::ReadStudyState(sdir);
  ASSERT_TRUE(mid.ok()) << mid.status().ToString();
  EXPECT_EQ(mid->state, "running");  // as it was when killed

  ShellRun resumed = Shell(tune + " --parallel 2 --slots 4 --threads 1 --resume " + sdir);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output << *ReadFile(dir_ + "/tune1.log");
  auto s = tune::ReadStudyState(sdir);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->state, "done");
  EXPECT_EQ(s->end_reason, "budget.max_trials reached");
  ASSERT_EQ(s->trials.size(), 4u);
  int completed = 0, stopped = 0;
  for (const auto& t : s->trials) {
    EXPECT_NE(t.state, "failed") << t.id << ": " << t.error << "\n"
                                 << TrialLogs(t.run_dir) << "study, first run:\n"
                                 << Tail(dir_ + "/tune1.log") << "study, resumed:\n"
                                 << resumed.output;
    if (t.state == "completed") {
      ++completed;
      EXPECT_EQ(t.epochs_done, 3);
      EXPECT_EQ(t.curve.size(), 3u);
      // Promoted from rung 0: continued from its checkpoint, not from scratch.
      EXPECT_EQ(CountRows(t.run_dir, 1), 1) << t.id;
      EXPECT_NE(ReadFile(t.run_dir + "/stdout.log")->find("resuming from"), std::string::npos) << t.id;
    }
    if (t.state == "stopped") {
      ++stopped;
      EXPECT_EQ(t.epochs_done, 1);
    }
    // A trial that had finished its rung before the kill was not trained again.
    if (finished_before.count(t.id)) {
      EXPECT_EQ(CountRows(t.run_dir, 1), 1) << t.id;
    }
  }
  // 4 results at rung 0: floor(4/3) = 1 promotion.
  EXPECT_EQ(completed, 1);
  EXPECT_EQ(stopped, 3);
  // Trials finished before the kill were not run again.
  for (const auto& t : s->trials)
    if (finished_before.count(t.id) && t.state == "stopped") {
      EXPECT_EQ(t.segments, 1) << t.id;
    }
  EXPECT_NE(resumed.output.find("published the best trial"), std::string::npos) << resumed.output;

  // Results.
  const int best = tune::BestTrial(*s);
  ASSERT_GE(best, 0);
  auto csv = ReadFile(sdir + "/study.csv");
  ASSERT_TRUE(csv.ok());
  EXPECT_EQ(std::count(csv->begin(), csv->end(), '\n'), 5);
  for (const char* png : {"/curves.png", "/params.png"}) {
    auto bytes = ReadFile(sdir + png);
    ASSERT_TRUE(bytes.ok()) << png;
    EXPECT_EQ(bytes->substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << png;
    EXPECT_GT(bytes->size(), 2000u) << png;
  }
  // Published and aliased, with the study in the lineage.
  json aliases = ReadJson(dir_ + "/registry/tune_mlp/aliases.json");
  ASSERT_TRUE(aliases.is_object()) << "no aliases.json";
  const int version = aliases["aliases"].value("best", 0);
  ASSERT_GT(version, 0) << aliases.dump();
  json meta = ReadJson(dir_ + "/registry/tune_mlp/" + std::to_string(version) + "/metadata.json");
  ASSERT_TRUE(meta.is_object());
  const json& lin = meta["lineage"]["study"];
  EXPECT_EQ(lin.value("study", ""), "mlp_asha");
  EXPECT_EQ(lin.value("trial", ""), s->trials[best].id);
  EXPECT_TRUE(lin["params"].contains("optimizer.learning_rate")) << lin.dump();
  EXPECT_NEAR(lin.value("objective_value", 0.0), s->trials[best].final_value(), 1e-9);
  EXPECT_EQ(s->published.value("version", 0), version);
  ShellRun verify = Shell(kBin + "/registry/polis-registry verify --root " + dir_ + "/registry tune_mlp best");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;

  // polisctl tune status, text and JSON.
  ShellRun st = Shell(kBin + "/launch/polisctl tune status " + sdir);
  EXPECT_EQ(st.exit_code, 0) << st.output;
  EXPECT_NE(st.output.find("best so far: trial " + s->trials[best].id), std::string::npos) << st.output;
  EXPECT_NE(st.output.find("stopped@1"), std::string::npos) << st.output;
  ShellRun sj = Shell(kBin + "/launch/polisctl --json tune status " + sdir);
  json j = json::parse(sj.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << sj.output;
  EXPECT_EQ(j.value("state", ""), "done");
  EXPECT_EQ(j["trials"].size(), 4u);

  // Resuming a finished study does nothing more.
  ShellRun again = Shell(tune + " --resume " + sdir);
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("already published"), std::string::npos) << again.output;
}

// SIGTERM to polis-tune: every running trial is asked (by PID) to
// checkpoint and stop, polis-tune exits 0 once none of their processes is
// left, and --resume finishes the study.
TEST_F(TuneIntegration, SigtermStopsTheTrialsAndResumeFinishes) {
  WriteBaseJob(dir_);
  const std::string study = dir_ + "/grid.pbtxt";
  std::ofstream(study) << R"(name: "mlp_grid"
base_job: "mlp.pbtxt"
param { field: "optimizer.learning_rate" choice { value: "0.001" value: "0.003" } }
sampler: GRID
scheduler { max_epochs: 2 }
objective { metric: "train_loss" direction: MINIMIZE }
)";
  const std::string sdir = dir_ + "/grid";
  const std::string tune = "POLIS_BUILD_DIR=" + kBin + " " + kBin + "/launch/polis-tune";
  const std::string log = dir_ + "/grid1.log";
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("POLIS_BUILD_DIR", kBin.c_str(), 1);
    const std::string bin = kBin + "/launch/polis-tune";
    execl(bin.c_str(), bin.c_str(), "--parallel", "2", "--slots", "4", "--threads", "1", "--study-dir", sdir.c_str(),
          study.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  // Each trial's coordinator is paused (SIGSTOP) as soon as it is up, so
  // neither trial can finish before polis-tune gets its SIGTERM; the
  // coordinators continue once polis-tune has asked both to stop (their
  // pending SIGTERM is then handled: checkpoint and stop).
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<pid_t> paused;
  for (const char* id : {"0000", "0001"}) {
    const std::string cj = sdir + "/trials/" + id + "/coordinator.json";
    pid_t coordinator = 0;
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60) && coordinator <= 0) {
      if (auto text = ReadFile(cj); text.ok()) {
        json c = json::parse(*text, nullptr, false);
        if (c.is_object()) coordinator = c.value("pid", 0);
      }
      if (coordinator <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_GT(coordinator, 0) << "trial " << id << " never started: " << *ReadFile(log);
    ASSERT_EQ(kill(coordinator, SIGSTOP), 0) << "trial " << id << " ended before it could be paused";
    paused.push_back(coordinator);
  }
  // While it runs, polis-tune serves the study: tune.json names the
  // address, /api/study links both running trials' dashboards.
  json served = ReadJson(sdir + "/tune.json");
  ASSERT_TRUE(served.is_object()) << *ReadFile(log);
  EXPECT_EQ(served.value("pid", 0), pid);
  const std::string address = served.value("address", "");
  EXPECT_NE(ReadFile(log)->find("polis-tune: study page at " + address + "/"), std::string::npos) << *ReadFile(log);
  // The document follows polis-tune's saves and its live-curve refresh
  // (every 5 s), which picks up the coordinators' addresses.
  json doc;
  auto dashboards = [&doc] {
    int n = 0;
    if (doc.is_object() && doc["trials"].is_array())
      for (const auto& t : doc["trials"]) n += t.value("dashboard", "").starts_with("http://") ? 1 : 0;
    return n;
  };
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       dashboards() < 2 && std::chrono::steady_clock::now() < until;) {
    doc = json::parse(Shell("curl -s --max-time 10 " + address + "/api/study").output, nullptr, false);
    if (dashboards() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_TRUE(doc.is_object()) << address;
  EXPECT_EQ(doc.value("name", ""), "mlp_grid");
  EXPECT_EQ(doc["trials"].size(), 2u) << doc.dump();
  EXPECT_EQ(dashboards(), 2) << doc.dump();
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60) &&
         ReadFile(log)->find("checkpoint and stop") == std::string::npos)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (pid_t c : paused) kill(c, SIGCONT);
  int status = -1;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120) && waitpid(pid, &status, WNOHANG) != pid)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(WIFEXITED(status)) << "polis-tune did not stop: " << *ReadFile(log);
  EXPECT_EQ(WEXITSTATUS(status), 0) << *ReadFile(log);
  EXPECT_NE(ReadFile(log)->find("asking 2 trial(s) to checkpoint and stop"), std::string::npos) << *ReadFile(log);
  // No trial process is left behind.
  EXPECT_NE(Shell("pgrep -f '[r]un-dir " + sdir + "/trials/'").exit_code, 0);
  auto mid = tune::ReadStudyState(sdir);
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(mid->state, "stopped");
  EXPECT_TRUE(ReadJson(sdir + "/tune.json").contains("ended_at"));

  ShellRun resumed = Shell(tune + " --parallel 2 --slots 4 --threads 1 --resume " + sdir);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  auto s = tune::ReadStudyState(sdir);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->state, "done");
  ASSERT_EQ(s->trials.size(), 2u);
  for (const auto& t : s->trials) {
    EXPECT_EQ(t.state, "completed") << t.id << ": " << t.error;
    EXPECT_EQ(t.epochs_done, 2) << t.id;
    EXPECT_EQ(t.curve.size(), 2u) << t.id;
  }
}

TEST_F(TuneIntegration, BadMonitorAddressIsRefusedAndLeavesNothing) {
  WriteBaseJob(dir_);
  const std::string study = WriteStudy(dir_);
  for (const char* address : {"bogus", "127.0.0.1:99999"}) {
    ShellRun r = Shell("POLIS_BUILD_DIR=" + kBin + " " + kBin + "/launch/polis-tune --monitor " + address +
                       " --study-dir " + dir_ + "/s " + study);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(std::string("--monitor: ")), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(address), std::string::npos) << r.output;
    EXPECT_FALSE(PathExists(dir_ + "/s")) << address;
  }
}

TEST_F(TuneIntegration, StudyNeedingMoreSlotsThanGivenIsRefused) {
  WriteBaseJob(dir_);
  const std::string study = WriteStudy(dir_);
  ShellRun r = Shell("POLIS_BUILD_DIR=" + kBin + " " + kBin + "/launch/polis-tune --slots 1 --study-dir " + dir_ +
                     "/s " + study);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("one trial needs 2 ranks"), std::string::npos) << r.output;
  EXPECT_FALSE(PathExists(dir_ + "/s/study.json"));
}

}  // namespace
}  // namespace polis::it
